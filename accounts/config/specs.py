"""校验通过的 users.json：名字都已规范化、引用都已解析，apply.py 照此写库。"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_RULE_PROJECT = "*"
ADMIN_ROLE_KEY = "admin"


@dataclass
class RoleSpec:
    key: str
    name: str
    is_admin: bool = False
    can_use_bot: bool = True
    can_approve: bool = True
    defined: bool = False  # 在 roles 里显式定义（否则是用户引用时自动建的自定义角色）


@dataclass
class UserSpec:
    username: str
    role: str
    telegram_id: int | None = None
    telegram_username: str = ""
    email: str = ""
    display_name: str = ""
    projects: list[str] = field(default_factory=list)
    environments: list[str] = field(default_factory=list)
    jenkins_user: str = ""
    extra_roles: list[str] = field(default_factory=list)


@dataclass
class RuleSpec:
    project: str
    environment: str = ""
    is_default: bool = False
    aliases: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    approvers: list[str] = field(default_factory=list)
    approver_roles: list[str] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    chat_id: int | None = None
    required_approvals: int | None = None
    timeout_minutes: int | None = None
    timeout_policy: str = ""
    stop_build: bool | None = None
    reminder_interval_minutes: int | None = None
    reminder_backoff: float | None = None
    reminder_max_count: int | None = None
    required_roles: list[str] = field(default_factory=list)
    escalation_approvers: list[str] = field(default_factory=list)
    escalation_roles: list[str] = field(default_factory=list)
    escalate_after_reminders: int | None = None
    escalate_before_minutes: int | None = None
    freeze_pending: str = ""


@dataclass
class UsersConfig:
    roles: dict[str, RoleSpec]
    users: dict[str, UserSpec]
    rules: list[RuleSpec]
