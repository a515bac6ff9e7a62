"""给人看的时间（按 TIME_ZONE 的本地时间显示，库里存的是 UTC）与名字。"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _


def format_time(value: datetime) -> str:
    return date_format(timezone.localtime(value), "Y-m-d H:i:s")


def voter_label(vote: Any) -> str:
    """投票人的名字：受托人代投时写作“B（代 A）”（X16）。"""
    if vote.on_behalf_of_id and vote.on_behalf_of is not None:
        return delegated_label(vote.approver.label, vote.on_behalf_of.label)
    return vote.approver.label


def delegated_label(delegate: str, delegator: str) -> str:
    # Translators: 受托人代委托人审批，如 "Bob（代 Alice）"；英文可写作 "%(delegate)s (for %(delegator)s)"
    return _("%(delegate)s（代 %(delegator)s）") % {"delegate": delegate, "delegator": delegator}
