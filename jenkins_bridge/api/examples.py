"""/api/docs 里的示例：与服务器真实的回答同形（approval_reply()、approval_detail_data() 等），讲同一件事——
shop-backend 的第 128 次构建申请发布到生产环境（要两票），Bob 与 Erin 先后同意，Jenkins 的 input 随即继续。

给人看的值（说明、理由、封版名、角色名）用惰性翻译：文档按请求的语言生成，英文文档里不留中文。
示例须符合文档里的结构（tests/approvalbot/test_api_docs.py 逐个校验）。
不导入模型：ApiPagination 也用这里的地址，它随 DRF 的设置早早被导入，那时应用还没加载完。
"""

from __future__ import annotations

from typing import Any

from django.utils.functional import lazy
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import OpenApiExample

BASE_URL = "https://approval.example.com"
APPROVAL_ID = "7K3M9Q2A"
FROZEN_ID = "9F4T6W1C"


def _translated(message: Any, **values: Any) -> Any:
    """先按请求的语言翻译再代入：gettext_lazy(...) % {...} 会立即求值，导入时就定格成中文。"""
    return lazy(lambda: message % values, str)()


DESCRIPTION = _("修复支付回调；升级 Redis 客户端 🚀")
OPERATION = _("部署")
APPROVE_REASON = _("已核对变更单")
REJECT_REASON = _("数据库迁移未评审")
EMERGENCY_REASON = _("支付回调故障，需立即修复")
FREEZE_NAME = _("周末封版")

CREATED_AT = "2026-01-01T10:00:00+08:00"
BOB_VOTED_AT = "2026-01-01T10:05:12+08:00"
ERIN_VOTED_AT = "2026-01-01T10:12:40+08:00"

PENDING_REPLY: dict[str, Any] = {
    "id": APPROVAL_ID, "status": "pending", "proceed": False, "project": "shop-backend",
    "environment": "production", "build_number": 128, "version": "v2.3.0", "required_approvals": 2,
    "approvals_received": 0, "created_at": CREATED_AT, "expires_at": "2026-01-01T10:30:00+08:00",
    "decided_at": None, "decided_by": None, "reason": "",
    # 日志链接带签名（?t=），与 approvals.links.log_url() 一致
    "links": {"status": f"{BASE_URL}/api/status/{APPROVAL_ID}",
              "logs": f"{BASE_URL}/logs/{APPROVAL_ID}?t=1xYcV2:6yPJ_Sch5eSbdHkQq5l-0aSsJmsuxWGTtPXIFcQ0Xe8"},
}
APPROVED_REPLY = {**PENDING_REPLY, "status": "approved", "proceed": True, "approvals_received": 2,
                  "decided_at": ERIN_VOTED_AT, "decided_by": "Erin"}
BOB_APPROVED_REPLY = {**PENDING_REPLY, "approvals_received": 1, "final": False}
BOB_REJECTED_REPLY = {**PENDING_REPLY, "status": "rejected", "decided_at": BOB_VOTED_AT, "decided_by": "Bob",
                      "reason": REJECT_REASON, "final": True}

DETAIL = {
    **APPROVED_REPLY,
    "job_name": "shop-backend", "build_url": "https://jenkins.example.com/job/shop-backend/128/",
    "description": DESCRIPTION, "operation": OPERATION, "requested_by": "dave",
    "jenkins": {"server": "default", "resume_mode": "input", "state": "done", "attempts": 1, "error": "",
                "at": "2026-01-01T10:12:41+08:00"},
    "votes": [
        {"approver": "bob", "approver_name": "Bob", "on_behalf_of": None, "decision": "approve",
         "reason": APPROVE_REASON, "channel": "telegram", "created_at": BOB_VOTED_AT},
        {"approver": "erin", "approver_name": "Erin", "on_behalf_of": None, "decision": "approve",
         "reason": "", "channel": "api", "created_at": ERIN_VOTED_AT},
    ],
    "events": [
        {"kind": "created", "actor": "dave", "channel": "api", "created_at": CREATED_AT,
         "details": {"resume_mode": "input", "rule": "shop-backend [production]", "matched": True,
                     "expires_at": "2026-01-01T02:30:00+00:00"}},
        {"kind": "vote", "actor": "Bob", "channel": "telegram", "created_at": BOB_VOTED_AT,
         "details": {"decision": "approve", "reason": APPROVE_REASON, "votes": 1, "required": 2, "missing": []}},
        {"kind": "approved", "actor": "Erin", "channel": "api", "created_at": ERIN_VOTED_AT,
         "details": {"reason": "", "votes": 2, "required": 2, "missing": []}},
        {"kind": "jenkins_action", "actor": "", "channel": "system", "created_at": "2026-01-01T10:12:41+08:00",
         "details": {"action": "input_proceed", "ok": True, "error": "", "permanent": False, "input_id": "Release",
                     "parameters": {"APPROVER": "Erin"}}},
    ],
}

APPROVER = {
    "username": "bob", "display_name": "Bob",
    "role": {"key": "ops_lead", "name": _("运维负责人"), "is_admin": False, "can_approve": True},
    "telegram_username": "bob", "telegram_bound": True, "projects": ["shop-backend"], "environments": [],
    "is_active": True,
}

BUILD_RESULT_REPLY = {"project": "shop-backend", "job_name": "shop-backend", "build_number": 128,
                      "result": "FAILURE", "duration": 183000, "approval": APPROVAL_ID,
                      "approval_status": "approved", "created": True}

_WEEK_DAYS = ["2026-01-05", "2026-01-06", "2026-01-07", "2026-01-08", "2026-01-09", "2026-01-10", "2026-01-11"]
STATUS = {
    "total": 42, "by_status": {"pending": 3, "approved": 30, "rejected": 5, "timeout": 2, "cancelled": 2},
    "today": 4, "median_decision_seconds": 312.5,
    "analytics": {
        "period": {"since": "2026-01-05", "until": "2026-01-11", "days": 7},
        "filters": {"project": "shop-backend", "environment": "production"},
        "created": 6, "by_status": {"pending": 1, "approved": 4, "rejected": 1, "timeout": 0, "cancelled": 0},
        "decisions": {"count": 5, "median_seconds": 600.0, "p90_seconds": 2520.0, "sampled": False},
        "per_project": [{"project": "shop-backend", "count": 5, "median_seconds": 600.0, "p90_seconds": 2520.0}],
        "per_approver": [{"approver": "bob", "name": "Bob", "count": 5, "median_seconds": 540.0,
                          "p90_seconds": 2400.0}],
        "daily": [{"date": day, "pending": int(n == 6), "approved": int(n < 4), "rejected": int(n == 4),
                   "timeout": 0, "cancelled": 0} for n, day in enumerate(_WEEK_DAYS)],
        "weekly": [{"week": "2026-01-05", "timeouts": 0, "freezes": 0}],
        "timeouts": 0, "freezes": 0,
        "reminders": [{"reminders": n, "or_more": n == 10, "count": {0: 3, 1: 2}.get(n, 0)} for n in range(11)],
        "decided_without_reminder": 0.6,
        "pending_now": {"count": 1, "oldest_seconds": 1260.0,
                        "buckets": [{"up_to_seconds": 900, "count": 0}, {"up_to_seconds": 3600, "count": 1},
                                    {"up_to_seconds": 14400, "count": 0}, {"up_to_seconds": 86400, "count": 0},
                                    {"up_to_seconds": None, "count": 0}],
                        "oldest": [{"id": "7K3M9Q2A", "project": "shop-backend", "environment": "production",
                                    "age_seconds": 1260.0}]},
    },
}


# ---------------------------------------------------------------- 各操作用的 OpenApiExample


ALREADY_DECIDED = OpenApiExample(
    _("错误（统一形状）"),
    value={"error": {
        "code": "already_decided",
        # 与 approvals.errors.already_decided_message() 同一条文案
        "message": _translated(_("审批 %(id)s 已由 %(who)s 于 %(time)s %(status)s。"), id=APPROVAL_ID, who="Erin",
                               time="2026-01-01 10:12:40", status=_("已同意")),  # Status.APPROVED 的显示名
        "details": {"status": "approved", "decided_by": "Erin", "decided_at": "2026-01-01T02:12:40+00:00"}}},
    response_only=True, status_codes=["409"],
)

FROZEN = OpenApiExample(
    _("封版期间的申请"),
    value={"error": {
        "code": "frozen",
        # 与 approvals.errors.freeze_refused_error() 同一条文案
        "message": _translated(_("封版期间不能发布：「%(window)s」至 %(ends)s 结束，审批 %(id)s 已记录并拒绝。"
                                 "确需发布请以紧急发布申请（emergency=true 并写明 emergency_reason）。"),
                               window=FREEZE_NAME, ends="2026-01-05 09:00:00", id=FROZEN_ID),
        "details": {"id": FROZEN_ID, "status": "rejected", "window": FREEZE_NAME,
                    "ends_at": "2026-01-05T09:00:00+08:00"}}},
    response_only=True, status_codes=["409"],
)

WAIT_REQUESTS = [
    OpenApiExample(
        _("input 方式申请"),
        value={"job_name": "shop-backend", "build_number": "128", "environment": _("生产"), "version": "v2.3.0",
               "description": DESCRIPTION, "operation": OPERATION, "requested_by": "dave",
               "build_url": "https://jenkins.example.com/job/shop-backend/128/", "input_id": "Release"},
        description=_("字段名也可以用 Jenkins 的写法（JOB_NAME、BUILD_NUMBER、BUILD_URL、BUILD_USER_ID、env 等），"
                      "构建号也可以是字符串。"),
        request_only=True,
    ),
    OpenApiExample(_("轮询已有审批"), value={"id": APPROVAL_ID, "wait": 30}, request_only=True),
    OpenApiExample(_("紧急发布（封版期间）"),
                   value={"job_name": "shop-backend", "build_number": "129", "environment": "production",
                          "version": "v2.3.1", "emergency": True, "emergency_reason": EMERGENCY_REASON},
                   request_only=True),
]
WAIT_REPLIES = [
    OpenApiExample(_("新的申请：等待审批"), value=PENDING_REPLY, response_only=True, status_codes=["201", "200"]),
    OpenApiExample(_("已同意：流水线可以继续"), value=APPROVED_REPLY, response_only=True, status_codes=["200"]),
    FROZEN,
]

STATUS_REPLY = OpenApiExample(_("统计"), value=STATUS, response_only=True)
DETAIL_REPLY = OpenApiExample(_("已同意，Jenkins 已继续"), value=DETAIL, response_only=True)
# 列表的示例只写一条；分页的 count、next、previous 由 ApiPagination 的文档给出
LIST_REPLY = OpenApiExample(_("已同意，Jenkins 已继续"), value=APPROVED_REPLY, response_only=True)
USERS_REPLY = OpenApiExample(_("审批人"), value=APPROVER, response_only=True)

APPROVE = [
    OpenApiExample(_("同意"), value={"approver": "bob", "reason": APPROVE_REASON}, request_only=True),
    OpenApiExample(_("还差一票"), value=BOB_APPROVED_REPLY, response_only=True, status_codes=["200"]),
    ALREADY_DECIDED,
]
REJECT = [
    OpenApiExample(_("拒绝"), value={"approver": "bob", "reason": REJECT_REASON}, request_only=True),
    OpenApiExample(_("一票拒绝，审批结束"), value=BOB_REJECTED_REPLY, response_only=True, status_codes=["200"]),
    ALREADY_DECIDED,
]

BUILD_RESULT = [
    OpenApiExample(_("构建失败"), value={"job_name": "shop-backend", "build_number": 128, "result": "FAILURE",
                                     "duration": 183000, "id": APPROVAL_ID}, request_only=True),
    OpenApiExample(_("第一次回报"), value=BUILD_RESULT_REPLY, response_only=True, status_codes=["201"]),
    OpenApiExample(_("同一构建再次回报"), value={**BUILD_RESULT_REPLY, "created": False}, response_only=True,
                   status_codes=["200"]),
]
