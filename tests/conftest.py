"""共享测试夹具：一组固定的人物（发起人、审批人、管理员、局外人）与审批工厂。"""

from __future__ import annotations

import pytest

# 测试模式由 tests/settings.py 显式打开（pyproject 的 DJANGO_SETTINGS_MODULE）：不读 .env，任务提交后同步执行，broker 用内存


@pytest.fixture
def roles(db):
    from accounts.models import Role

    return {
        "admin": Role.objects.create(key="admin", name="管理员", is_admin=True),
        "ops_lead": Role.objects.create(key="ops_lead", name="运维负责人"),
        "pm": Role.objects.create(key="pm", name="项目经理"),
        "developer": Role.objects.create(key="developer", name="开发", can_approve=False),
    }


@pytest.fixture
def people(roles):
    """requester 发起构建；approver 是 shop-backend 的审批人；admin 管理员；outsider 有角色但不在规则里。"""
    from accounts.models import Approver

    return {
        "requester": Approver.objects.create(
            username="dave", display_name="Dave", role=roles["developer"], telegram_id=1004,
            telegram_username="dave_dev", jenkins_user="dave",
        ),
        "approver": Approver.objects.create(
            username="bob", display_name="Bob", role=roles["ops_lead"], telegram_id=1002, telegram_username="bob"
        ),
        "approver2": Approver.objects.create(
            username="erin", display_name="Erin", role=roles["pm"], telegram_id=1005, telegram_username="erin"
        ),
        "admin": Approver.objects.create(
            username="alice", display_name="Alice", role=roles["admin"], telegram_id=1001, telegram_username="alice"
        ),
        "outsider": Approver.objects.create(
            username="mallory", display_name="Mallory", role=roles["pm"], telegram_id=1666, telegram_username="mallory"
        ),
    }


@pytest.fixture
def shop_rule(people):
    """shop-backend：测试环境 bob 一人可批；生产环境需要 bob 与 erin 两票。"""
    from accounts.models import ProjectRule

    base = ProjectRule.objects.create(
        project="shop-backend", aliases=["shop", "商城后端"], patterns=["folder/shop-*"], chat_id=-1001234567890
    )
    base.approvers.add(people["approver"])
    base.owners.add(people["admin"])
    prod = ProjectRule.objects.create(
        project="shop-backend", environment="production", required_approvals=2, timeout_minutes=30
    )
    prod.approvers.add(people["approver"], people["approver2"])
    return base


@pytest.fixture
def make_approval(db):
    """按需创建审批（走真正的服务）。"""
    from approvals.services import approval_create

    counter = {"n": 100}

    def factory(**overrides):
        counter["n"] += 1
        kwargs = {
            "job_name": "shop-backend",
            "build_number": counter["n"],
            "environment": "test",
            "version": "v1.2.3",
            "description": "修复支付回调 🚀",
            "operation": "部署",
            "requested_by": "dave",
        }
        kwargs.update(overrides)
        approval, _created = approval_create(**kwargs)
        return approval

    return factory
