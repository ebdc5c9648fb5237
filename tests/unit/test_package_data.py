"""Files the code reads are package data: a non-editable install (a wheel's layout, pip --target)
serves the page, its script and style and the graph library from where it was installed, and
holds the XDP fast path's C source where ebpf.compile looks for it."""

import json
import os
import shutil
import subprocess
import sys

import pytest

import controller.web

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import controller.web as web
got = {"module": web.__file__}
app = web.Web(None, lambda fn: fn(), switches=object())
for path, handler in [("/", app.page)] + [("/static/" + n, app.static) for n in web.FILES]:
    status = []
    body = b"".join(handler({"PATH_INFO": path}, lambda s, h: status.append(s)))
    got[path] = [status[0], len(body)]
print(json.dumps(got))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A non-editable install of this tree: (the folder it went to, the folder to run in)."""
    tmp_path = tmp_path_factory.mktemp("install")
    source, target = tmp_path / "src", tmp_path / "site"
    # A copy of the tree: the build's own folders (build/, *.egg-info) stay out of the checkout.
    skip = shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "tests", "docs")
    shutil.copytree(ROOT, source, ignore=skip)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    return target, tmp_path


def test_a_non_editable_install_serves_the_page_from_the_installed_package(installed):
    target, tmp_path = installed
    run = subprocess.run(
        [sys.executable, "-c", SERVE, str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout)
    assert got.pop("module").startswith(str(target))
    static = os.path.dirname(controller.web.__file__) + "/static/"
    want = {"/": "index.html", **{f"/static/{n}": n for n in controller.web.FILES}}
    assert got == {p: ["200 OK", os.path.getsize(static + n)] for p, n in want.items()}


def test_a_non_editable_install_holds_the_xdp_source_where_the_compiler_child_reads_it(installed):
    target, tmp_path = installed
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "import ebpf.compile as c; print(c.SOURCE)",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    source = run.stdout.strip()
    assert source.startswith(str(target))
    with (
        open(source, "rb") as got,
        open(os.path.join(ROOT, "ebpf", "xdp_firewall.c"), "rb") as want,
    ):
        assert got.read() == want.read()
