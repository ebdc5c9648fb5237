"""Group stats replies that must not become connections (apps/services/counting.py)."""

from collections import Counter

from apps.services.compile import select_group_id
from apps.services.counting import GroupCounts
from controller.flows import Bucket, group, group_action
from controller.switch import GroupStat
from tests.unit.test_services_counting import _service

UNAVAILABLE = 2**64 - 1  # OpenFlow's value of a counter a switch does not have


def test_a_bucket_counter_the_switch_does_not_have_counts_nothing():
    """OpenFlow 1.3.5 7.3.5: a counter a switch does not keep is all ones. A group made since
    the last poll counts whole, so that value was 2**64 - 1 connections at once, and a switch
    that has the counter only sometimes made it look reset (counted whole again) each time."""
    s = _service()
    gid = select_group_id(0, 0)
    g = group(gid, "select", [Bucket((group_action(11),), weight=3)])
    ff = {"web": {"v1-a:80": 11}}
    counted: Counter = Counter()
    counts = GroupCounts(lambda svc, endpoint, n: counted.update({endpoint: n}))
    counts.add(1, [], False, 0.0, [s], {}, ff)
    counts.add(1, [GroupStat(gid, UNAVAILABLE, 1.0, (UNAVAILABLE,))], False, 2.0, [s], {gid: g}, ff)
    assert counted == {}
    # First read at 3 (older than the last poll: the baseline), then unavailable, then 5.
    counts.add(1, [GroupStat(gid, 3, 3.0, (3,))], False, 4.0, [s], {gid: g}, ff)
    counts.add(1, [GroupStat(gid, 0, 5.0, (UNAVAILABLE,))], False, 6.0, [s], {gid: g}, ff)
    counts.add(1, [GroupStat(gid, 5, 7.0, (5,))], False, 8.0, [s], {gid: g}, ff)
    assert counted == {"v1-a": 2}
