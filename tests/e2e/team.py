"""一个团队：发布群、人物、users.json，以及在假 Telegram 上“看消息、点按钮、发命令”的小工具。"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tests.fake_telegram import FakeTelegram, StoredMessage

from .infra import wait_until

GROUP = -1001000000001

# (Telegram id, Telegram 用户名, 名字)
PEOPLE = {
    "alice": (1001, "alice_admin", "Alice"),
    "bob": (1002, "bob_ops", "Bob"),
    "erin": (1005, "erin_pm", "Erin"),
    "dave": (1004, "dave_dev", "Dave"),
    "mallory": (1666, "mallory_pm", "Mallory"),
}

# bob 批 shop-backend 的测试环境；生产要 bob 与 erin 两票；billing 两人谁都可以批；
# mallory 有角色但哪儿都不是审批人
USERS: dict[str, Any] = {
    "roles": {
        "admin": {"name": "管理员", "is_admin": True},
        "ops_lead": "运维负责人",
        "pm": "项目经理",
        "developer": {"name": "开发工程师", "can_approve": False, "can_use_bot": True},
    },
    "users": {
        "alice": {"role": "admin", "telegram_id": 1001, "telegram_username": "alice_admin", "name": "Alice"},
        "bob": {"role": "ops_lead", "telegram_id": 1002, "telegram_username": "bob_ops", "name": "Bob",
                "jenkins_user": "bob"},
        "erin": {"role": "pm", "telegram_id": 1005, "telegram_username": "erin_pm", "name": "Erin"},
        "dave": {"role": "developer", "telegram_id": 1004, "telegram_username": "dave_dev", "name": "Dave",
                 "jenkins_user": "dave"},
        "mallory": {"role": "pm", "telegram_id": 1666, "telegram_username": "mallory_pm", "name": "Mallory"},
    },
    "projects": {
        "shop-backend": {
            "approvers": ["bob"], "owners": ["alice"], "chat_id": GROUP, "timeout_policy": "reject",
            "environments": {"production": {"approvers": ["bob", "erin"], "required_approvals": 2}},
        },
        "billing": {"approvers": ["bob", "erin"], "chat_id": GROUP},
        # 夜间报表：没人理它，按规则超时即拒绝（中止 Jenkins 的 input）
        "nightly-report": {"approvers": ["bob"], "chat_id": GROUP, "timeout_policy": "reject"},
        # 一组微服务（fleet-1、fleet-2…）：同一条规则，任务名各不相同，不会互相取代
        "fleet": {"patterns": ["fleet-*"], "approvers": ["bob"], "chat_id": GROUP},
    },
}

_HREF_RE = re.compile(r'<a href="([^"]+)">([^<]*)</a>')


@dataclass
class Team:
    """假 Telegram 上的发布群与群里的人。"""

    telegram: FakeTelegram

    def __post_init__(self) -> None:
        self.telegram.add_group(GROUP, "发布审批群")
        self.people = {name: self.telegram.add_user(uid, username, first)
                       for name, (uid, username, first) in PEOPLE.items()}

    def announced(self, public_id: str, timeout: float = 30) -> StoredMessage:
        """机器人发到群里的那条审批消息（带按钮）。"""
        return wait_until(lambda: next((m for m in self.telegram.chat_messages(GROUP)
                                        if public_id in m.text and m.message.get("reply_to_message") is None
                                        and "发布审批" in m.text), None), timeout, f"审批 {public_id} 的群消息")

    def current(self, message: StoredMessage) -> StoredMessage:
        return self.telegram.message(GROUP, message.message["message_id"])

    def tap(self, who: str, message: StoredMessage, data: str, timeout: float = 30) -> dict[str, Any]:
        """who 点了这条消息上的按钮；返回机器人对按钮的回答（text、show_alert）。"""
        query = self.telegram.tap(self.people[who], GROUP, message.message["message_id"], data)
        return wait_until(lambda: self.telegram.answer(query), timeout, f"{who} 的按钮得到回答")

    def say(self, who: str, text: str) -> dict[str, Any]:
        """who 在群里发一条消息（命令）；返回那条 update。"""
        return self.telegram.user_message(self.people[who], GROUP, text)

    def reply_to(self, update: dict[str, Any], timeout: float = 30) -> StoredMessage:
        """机器人对某条用户消息的回复。"""
        message_id = update["message"]["message_id"]
        return wait_until(lambda: next(iter(self.telegram.replies_to(GROUP, message_id)), None), timeout,
                          "机器人回复命令")

    def edited(self, message: StoredMessage, fragment: str, timeout: float = 30) -> StoredMessage:
        """等审批消息被改成含 fragment 的内容。"""
        def check() -> StoredMessage | None:
            now = self.current(message)
            return now if fragment in now.text else None

        return wait_until(check, timeout, f"审批消息被改成「{fragment}」")

    def notices(self, message: StoredMessage, fragment: str) -> list[StoredMessage]:
        """回复在审批消息下、含 fragment 的通知（构建结果、超时通知）。"""
        return [m for m in self.telegram.replies_to(GROUP, message.message["message_id"]) if fragment in m.text]


def links(message: StoredMessage) -> dict[str, str]:
    """消息里的链接：文字 → 地址（HTML 里的 &amp; 还原）。"""
    return {text: href.replace("&amp;", "&") for href, text in _HREF_RE.findall(message.html or "")}


def buttons(message: StoredMessage) -> list[str]:
    return [b["callback_data"] for b in message.buttons]
