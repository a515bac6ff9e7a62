"""二分图最大匹配（Kuhn 算法）：一人的一票最多填一个角色名额（X1），人数与角色数都很小。

按角色法定票的计算（approvals.quorum）与配置检查（“这些角色能不能由不同的人凑齐”）共用这一份。
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping


def match_slots(slots: Iterable[Hashable], holders: Mapping[Hashable, Iterable[Hashable]]) -> dict[Hashable, Hashable]:
    """slots 是要填的名额（如角色），holders[slot] 是能填它的人。返回 {名额: 人}，每人最多填一个名额。

    没填上的名额不在结果里。结果是最大匹配：能凑齐时一定凑齐，不受投票先后的影响。
    """
    slots = list(slots)
    options = {slot: sorted(set(holders.get(slot, ())), key=repr) for slot in slots}
    owner: dict[Hashable, Hashable] = {}  # 人 → 名额

    def assign(slot: Hashable, seen: set[Hashable]) -> bool:
        for person in options[slot]:
            if person in seen:
                continue
            seen.add(person)
            if person not in owner or assign(owner[person], seen):
                owner[person] = slot
                return True
        return False

    for slot in slots:
        assign(slot, set())
    return {slot: person for person, slot in owner.items()}
