"""The dp_hash table the running Open vSwitch builds for method "switch"'s buckets is the one
apps/services/weights.py models, hash value for hash value, and comes within one value (0.39
points) of the split: read with `ofproto/trace`, which names the bucket of a given dp_hash."""

import re
import subprocess
from fractions import Fraction

import pytest

from apps.services.weights import DP_HASH_MAX_SLOTS, ovs_hash_map, switch_buckets
from topologies.bridges import fresh_bridge

BRIDGE = "t18sel0"
SPLITS = [[90, 10], [70, 30], [99, 1], [33, 33, 34]]


def ofctl(*args: str) -> str:
    cmd = ["ovs-ofctl", "-O", "OpenFlow13", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def trace(dp_hash: int) -> str:
    flow = f"in_port=LOCAL,tcp,dp_hash={dp_hash}"
    cmd = ["ovs-appctl", "ofproto/trace", BRIDGE, flow]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def switch_table(weights: list[int]) -> list[int]:
    """The bucket (index) for each masked dp_hash value of a select group of these weights."""
    ofctl("del-flows", BRIDGE)
    ofctl("del-groups", BRIDGE)
    buckets = "".join(
        f",bucket=weight:{w},actions=set_field:{i}->reg0" for i, w in enumerate(weights)
    )
    ofctl("add-group", BRIDGE, "group_id=1,type=select" + buckets)
    ofctl("add-flow", BRIDGE, "actions=group:1")
    mask = re.search(r"dp_hash=[0-9a-fx]+/(0x[0-9a-f]+)", trace(1 << 16))
    assert mask, "the group is not a dp_hash select group"
    # dp_hash 0 means "not computed": start above the mask so that every value is non-zero
    return [
        int(re.search(r"using bucket (\d+)", trace((1 << 16) + h)).group(1))
        for h in range(int(mask.group(1), 16) + 1)
    ]


@pytest.fixture(scope="module")
def bridge():
    fresh_bridge(BRIDGE)
    try:
        yield BRIDGE
    finally:
        subprocess.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", BRIDGE], check=True)


@pytest.mark.parametrize("split", SPLITS, ids=lambda s: "-".join(map(str, s)))
def test_the_switch_builds_the_modelled_table_within_one_value_of_the_split(bridge, split):
    plan = switch_buckets([Fraction(w) for w in split])
    table = switch_table([w for _, w in plan])
    assert table == ovs_hash_map([w for _, w in plan])
    assert len(table) == DP_HASH_MAX_SLOTS
    for k, w in enumerate(split):
        values = sum(table.count(j) for j, (i, _) in enumerate(plan) if i == k)
        assert abs(values / len(table) - w / sum(split)) < 1 / DP_HASH_MAX_SLOTS, (k, table)


def test_the_split_s_own_weights_as_buckets_get_only_a_16_value_table(bridge):
    """What method "switch" used to install: 90/10 as bucket weights 9 and 1, 87.5/12.5."""
    table = switch_table([9, 1])
    assert len(table) == 16 and table.count(1) == 2
