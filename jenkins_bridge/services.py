"""Jenkins 一侧的操作：决定之后继续/中止流水线（J5/J6），以及镜像 Jenkins 里发生的事（X12）。

审批状态的改变仍然只经过 approvals.services；这里只负责“对 Jenkins 做什么、看到了什么”。
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext as _

from approvals.models import Approval, Channel, ResumeMode, Status
from approvals.services import approval_cancel, approval_mirror_decision

from .client import BuildState, JenkinsClient, JenkinsError, PendingInput, normalize_input_id, unless_not_found
from .models import ApiScope, ApiToken, BuildWatch, hash_token, secret_env_name_problem

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "apv_"


@dataclass
class ResumeResult:
    """一次成功的 Jenkins 操作：action 写进历史，details 说明细节。"""

    action: str
    details: dict[str, Any] = field(default_factory=dict)


def build_watch_get(approval: Approval) -> BuildWatch:
    watch, _created = BuildWatch.objects.get_or_create(approval=approval)
    return watch


def webhook_payload(approval: Approval) -> dict[str, Any]:
    """回调给 Webhook Step 的 JSON：与等待接口的回答同一份内容（api.serializers.approval_reply），
    外加 Webhook 一直以来的两个字段名 approval_id（= id）与 approved（= proceed）。"""
    from .api.serializers import approval_reply

    reply = approval_reply(Approval.objects.prefetch_related("votes").get(pk=approval.pk))
    return {**reply, "approval_id": reply["id"], "approved": reply["proceed"]}


def _find_pending(inputs: list[PendingInput], wanted: str) -> PendingInput | None:
    """按 id 找等待中的 input：先精确（含首字母大写规则），再忽略大小写；没给 id 且只有一个时就是它。"""
    if not wanted:
        return inputs[0] if len(inputs) == 1 else None
    normalized = normalize_input_id(wanted)
    for item in inputs:
        if item.id == normalized:
            return item
    for item in inputs:
        if item.id.lower() == wanted.strip().lower():
            return item
    return None


def _input_gone(client: JenkinsClient, approval: Approval, watch: BuildWatch, cause: JenkinsError | None) -> ResumeResult:
    """input 不在等待列表里（或 POST 得到 404/“已处理”）：判断是我们早已做完、构建没了、有人在 Jenkins 里处理了，还是还没走到。"""
    if watch.action_sent_at is not None:
        # 上次请求其实已到达 Jenkins（例如响应超时），重试时 input 已消失：视为已完成，不重复操作
        return ResumeResult("already_done", {"note": _("input 已不在等待，之前的请求已送达")})
    state = client.build_state(approval.job_name, approval.build_number)  # 404 → 永久：构建已不存在
    service_user = (approval.jenkins_server.username or "").lower()
    # 看到过 input 等待时只认之后新增的记录（多个 input 的流水线里，前一个 input 的批准人不算）
    others = [u for u in state.approvers[watch.approvers_before or 0:] if u.lower() != service_user]
    rejected = state.rejections > (watch.rejections_before or 0)
    if others or (rejected and (state.rejected_by or "").lower() != service_user):
        who = others[-1] if others else (state.rejected_by or "")
        raise JenkinsError(
            _("input 已在 Jenkins 中被 %(who)s 处理") % {"who": who or "?"}, permanent=True, kind="input_answered"
        )
    if not state.building:
        raise JenkinsError(
            _("构建已结束（%(result)s），input 不再等待") % {"result": state.result or "-"},
            permanent=True, kind="build_finished",
        )
    if watch.input_seen_at is not None or (cause is not None and cause.kind == "input_answered"):
        raise JenkinsError(_("input 已在 Jenkins 中被处理"), permanent=True, kind="input_answered")
    # 流水线还没走到 input 步骤：稍后重试
    raise JenkinsError(_("input 尚未进入等待"), permanent=False, kind="input_not_pending")


def _resume_input(client: JenkinsClient, approval: Approval, watch: BuildWatch) -> ResumeResult:
    if _input_direct_allowed(approval) and watch.action_sent_at is None:
        # 上一次的请求可能已经送达（见 _input_gone）：那就先看等待列表，不再盲发
        result = _input_direct(client, approval, watch)
        if result is not None:
            return result
    return _input_by_lookup(client, approval, watch)


def _input_direct_allowed(approval: Approval) -> bool:
    """知道 input 的 id、又不用往参数里写审批人时，不必先读等待列表：直接发，一次请求。"""
    return bool(normalize_input_id(approval.input_id)) and not (approval.jenkins_server.approver_parameter or "").strip()


def _input_direct(client: JenkinsClient, approval: Approval, watch: BuildWatch) -> ResumeResult | None:
    """按给定的 id 直接继续/中止。404（id 不对、还没走到、已被处理）返回 None，由查等待列表的老路判断。"""
    input_id = normalize_input_id(approval.input_id)
    BuildWatch.objects.filter(pk=watch.pk).update(action_sent_at=timezone.now())
    try:
        if approval.status == Status.APPROVED:
            verb = client.input_proceed(approval.job_name, approval.build_number, input_id, None)
            return ResumeResult(f"input_{verb}", {"input_id": input_id, "parameters": {}})
        client.input_abort(approval.job_name, approval.build_number, input_id)
        return ResumeResult("input_abort", {"input_id": input_id})
    except JenkinsError as exc:
        if exc.kind not in ("not_found", "input_answered"):
            raise
    # 这一次没有生效：回到“未发送”，再由等待列表判断
    BuildWatch.objects.filter(pk=watch.pk).update(action_sent_at=None)
    watch.action_sent_at = None
    return None


def _input_by_lookup(client: JenkinsClient, approval: Approval, watch: BuildWatch) -> ResumeResult:
    approved = approval.status == Status.APPROVED
    wanted = approval.input_id
    pending: PendingInput | None = None
    inputs = unless_not_found(client.pending_inputs, approval.job_name, approval.build_number)
    if inputs is None:
        # 没装 Pipeline Stage View（wfapi）或构建不存在：看构建本身（404 即永久失败）；构建在就按给定 id 直接操作
        client.build_state(approval.job_name, approval.build_number)
    else:
        pending = _find_pending(inputs, wanted)
        if pending is None:
            return _input_gone(client, approval, watch, None)
        if watch.input_seen_at is None:
            BuildWatch.objects.filter(pk=watch.pk).update(input_seen_at=timezone.now())
            watch.input_seen_at = timezone.now()
    input_id = pending.id if pending else normalize_input_id(wanted)
    if not input_id:
        raise JenkinsError(_("不知道要操作哪个 input（没有 input_id，且无法读取等待列表）"), permanent=True,
                           kind="input_unknown")
    BuildWatch.objects.filter(pk=watch.pk).update(action_sent_at=timezone.now())
    details: dict[str, Any] = {"input_id": input_id}
    try:
        if approved:
            params = None
            wanted_param = (approval.jenkins_server.approver_parameter or "").strip()
            if pending and wanted_param:
                declared = {p.lower(): p for p in pending.parameters}
                if wanted_param.lower() in declared:
                    # X14：真实审批人写进 input 参数，而不只是服务账号
                    params = {declared[wanted_param.lower()]: approval.decided_by_name or "approval-bot"}
            verb = client.input_proceed(approval.job_name, approval.build_number, input_id, params)
            details["parameters"] = params or {}
            action = f"input_{verb}"
        else:
            client.input_abort(approval.job_name, approval.build_number, input_id)
            action = "input_abort"
    except JenkinsError as exc:
        if exc.kind in ("not_found", "input_answered"):
            # 回到“未发送”状态再判断：404 不能证明是我们做的
            BuildWatch.objects.filter(pk=watch.pk).update(action_sent_at=None)
            watch.action_sent_at = None
            return _input_gone(client, approval, watch, exc)
        raise
    return ResumeResult(action, details)


def approval_resume_jenkins(approval: Approval) -> ResumeResult:
    """按恢复方式对 Jenkins 执行决定（已由任务确认 jenkins_action_state=pending）。失败抛 JenkinsError。"""
    approved = approval.status == Status.APPROVED
    watch = build_watch_get(approval)
    client = JenkinsClient(approval.jenkins_server)
    if approval.resume_mode == ResumeMode.INPUT:
        result = _resume_input(client, approval, watch)
    elif approval.resume_mode == ResumeMode.WEBHOOK:
        status_code = client.post_webhook(approval.callback_url, webhook_payload(approval))
        result = ResumeResult("webhook", {"http_status": status_code})
    else:
        result = ResumeResult("poll", {"note": _("流水线轮询等待接口取得结果")})
    if not approved and approval.stop_build:
        if unless_not_found(client.stop_build, approval.job_name, approval.build_number):
            result.action += "+stop"
        else:
            result.details["stop"] = _("构建已不存在")
    return result


# ---------------------------------------------------------------- X12：镜像 Jenkins 里发生的事


# 从没成功读到过的构建连续 404 多少次、持续多久才当作“已删除”：服务账号没有查看权限时 Jenkins 也回 404，
# 不能因为一次配置错误在一分钟内取消全部待审批
MIRROR_NOT_FOUND_LIMIT = 5
MIRROR_NOT_FOUND_MIN_AGE = timedelta(minutes=10)


def _mirror_not_found(approval: Approval, watch: BuildWatch, now: datetime, exc: JenkinsError) -> str:
    """构建 404：看到过它才说明被删了；从没看到过就累计，连续够多次且够久才取消。"""
    count = watch.not_found_count + 1
    since = watch.not_found_since or now
    if watch.build_seen_at is not None or (count >= MIRROR_NOT_FOUND_LIMIT and now - since >= MIRROR_NOT_FOUND_MIN_AGE):
        approval_cancel(approval=approval, reason=_("构建已在 Jenkins 中被删除"), channel=Channel.JENKINS)
        BuildWatch.objects.filter(pk=watch.pk).update(checked_at=now, last_error="", not_found_count=count,
                                                      not_found_since=since)
        return "build_gone"
    note = _("构建返回 404（不存在，或服务账号无权查看）；连续 %(n)s 次") % {"n": count}
    BuildWatch.objects.filter(pk=watch.pk).update(checked_at=now, last_error=f"{exc.message}: {note}"[:2000],
                                                  not_found_count=count, not_found_since=since)
    return "not_found"


def _mirror_input_gone(approval: Approval, watch: BuildWatch, state: BuildState) -> str:
    """看到过的 input 不在等待了。只有确凿的证据才镜像成决定：

    - 看到 input 之后新增了非服务账号的 ApproverAction → 在 Jenkins 里批准了；
    - 新增了 Rejection（catchError 等会在构建结束前记下），或构建以 ABORTED 结束 → 在 Jenkins 里中止了；
    - 否则（点了 Abort 或 timeout 触发、构建还在跑 post{}，Jenkins 要到构建结束才记下中止原因）→ 下一轮再看。
    """
    service_user = (approval.jenkins_server.username or "").lower()
    new_approvers = [u for u in state.approvers[watch.approvers_before or 0:] if u.lower() != service_user]
    if new_approvers:
        approval_mirror_decision(approval=approval, approved=True, decided_by=new_approvers[-1],
                                 reason=_("在 Jenkins 中批准"))
        return "mirrored_approved"
    if state.rejections > (watch.rejections_before or 0) or (not state.building and state.result == "ABORTED"):
        approval_mirror_decision(approval=approval, approved=False, decided_by=state.rejected_by or "",
                                 reason=_("在 Jenkins 中中止"))
        return "mirrored_rejected"
    return "input_gone"


def approval_mirror_check(approval: Approval) -> str:
    """检查一条待审批的构建：构建已结束 → cancelled；input 在 Jenkins 里被处理 → 同样的决定。

    返回一个简短的结果标记（测试与日志用）。Jenkins 暂时不可用时抛 JenkinsError，由任务记录。
    """
    if approval.status != Status.PENDING:
        return "not_pending"
    watch = build_watch_get(approval)
    now = timezone.now()
    client = JenkinsClient(approval.jenkins_server)
    try:
        state = client.build_state(approval.job_name, approval.build_number)
    except JenkinsError as exc:
        if exc.kind != "not_found":
            raise
        return _mirror_not_found(approval, watch, now, exc)
    updates: dict[str, Any] = {"checked_at": now, "last_error": "", "not_found_count": 0, "not_found_since": None}
    if watch.build_seen_at is None:
        updates["build_seen_at"] = now
    outcome = "waiting"
    if approval.resume_mode == ResumeMode.INPUT:
        inputs: list[PendingInput] | None = None
        if state.building:
            inputs = unless_not_found(client.pending_inputs, approval.job_name, approval.build_number)
        if inputs is not None and _find_pending(inputs, approval.input_id):
            if watch.input_seen_at is None:
                # 记下此刻已有的批准/中止记录数：之后只认新增的
                updates.update(input_seen_at=now, approvers_before=len(state.approvers),
                               rejections_before=state.rejections)
            outcome = "input_pending"
        elif watch.input_seen_at is not None and (inputs is not None or not state.building):
            outcome = _mirror_input_gone(approval, watch, state)
    if outcome in ("waiting", "input_gone") and not state.building:
        approval_cancel(approval=approval, reason=_("构建已结束（%(result)s）") % {"result": state.result or "-"},
                        channel=Channel.JENKINS)
        outcome = "build_finished"
    BuildWatch.objects.filter(pk=watch.pk).update(**updates)
    return outcome


def approval_input_ready_check(approval: Approval) -> bool:
    """决定已做出、之前 input 还没出现的审批：现在该不该重新执行 Jenkins 操作？

    input 已在等待、读不到等待列表（没装 wfapi，只能直接试）或构建已结束（执行时会记录为永久失败）→ True。
    """
    client = JenkinsClient(approval.jenkins_server)
    inputs = unless_not_found(client.pending_inputs, approval.job_name, approval.build_number)
    if inputs is None or _find_pending(inputs, approval.input_id):
        return True
    state = unless_not_found(client.build_state, approval.job_name, approval.build_number)
    if state is None:
        return True
    BuildWatch.objects.filter(approval=approval).update(checked_at=timezone.now(), last_error="")
    return not state.building


# ---------------------------------------------------------------- API token


def api_token_create(*, name: str, scopes: list[str], signing_secret_env: str = "", description: str = "",
                     replace: bool = False) -> tuple[ApiToken, str]:
    """生成 token：返回 (记录, 明文)。明文只此一次，库里只存 SHA-256。replace=True 时轮换同名 token。"""
    from django.db import transaction

    unknown = sorted(set(scopes) - set(ApiScope.values))
    if unknown or not scopes:
        raise ValueError(_("未知或缺少的权限范围：%(s)s（可选 jenkins、approve、read）") % {"s": ", ".join(unknown) or "-"})
    problem = secret_env_name_problem(signing_secret_env)
    if problem:
        raise ValueError(problem)
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    values = {"key_prefix": raw[:12], "token_hash": hash_token(raw), "scopes": sorted(set(scopes)),
              "signing_secret_env": signing_secret_env, "description": description, "is_active": True,
              "last_used_at": None}
    with transaction.atomic():
        existing = ApiToken.objects.select_for_update().filter(name=name).first()
        if existing and not replace:
            raise ValueError(_("已有名为「%(name)s」的 token；要轮换请加 --replace。") % {"name": name})
        if existing:
            for key, value in values.items():
                setattr(existing, key, value)
            existing.save()
            return existing, raw
        return ApiToken.objects.create(name=name, **values), raw
