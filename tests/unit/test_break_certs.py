"""The lab CA writes keys through no symbolic link: mesh.certs_dir is read by lab hosts, and
the controller runs as root. Before, a link left at `<endpoint>/key.pem.tmp` (the temporary
name of the atomic write) was opened with O_TRUNC and followed: the controller truncated the
file it pointed to and wrote a private key into it."""

import os

from vnf.waypoint.ca import _write


def test_a_link_at_the_temporary_name_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    folder = tmp_path / "certs" / "v1-a"
    folder.mkdir(parents=True)
    os.symlink(victim, folder / "key.pem.tmp")
    _write(str(folder / "key.pem"), "KEY\n", 0o600)
    assert victim.read_text() == "precious\n"
    assert (folder / "key.pem").read_text() == "KEY\n"
    assert not (folder / "key.pem").is_symlink()
    assert (folder / "key.pem").stat().st_mode & 0o777 == 0o600
    assert not os.path.lexists(folder / "key.pem.tmp")
