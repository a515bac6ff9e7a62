"""网页上的同意/拒绝：首页、后台的审批页与后台列表的批量动作，都经 approvals.services.approval_decide。

渠道一律记为「管理后台」（Channel.ADMIN），权限在那一刻由服务检查；每一种拒绝都把服务给的原因原样告诉操作的人，
只有“后台账号没有关联审批人”换成对管理员有用的说法：去哪里关联。
"""

from __future__ import annotations

from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from accounts.models import Approver

from .eligibility import Eligibility
from .errors import ApprovalError, ApprovalNotFound, PermissionDenied
from .models import Approval, Channel, Status, Vote
from .selectors import approval_get
from .services import MAX_REASON_LENGTH, approval_decide


@dataclass(frozen=True)
class WebDecision:
    """一次网页投票的结果：level 是 django.contrib.messages 的级别，text 是给人看的一句话（不带审批编号）。"""

    ok: bool
    final: bool
    level: int
    text: str


def account_not_linked_message(user: AbstractBaseUser) -> str:
    """后台账号没有关联审批人：告诉（多半是管理员的）操作者怎样关联，而不是“请联系管理员”。"""
    return _("你的后台账号「%(user)s」还没有关联审批人，不能以它的身份投票。请在后台「审批人」里打开你的审批人记录"
             "（没有就新建一个），把「后台账号」设为 %(user)s，保存后再试。") % {"user": user.get_username()}


def why_cannot_vote(approval: Approval, approver: Approver | None, eligibility: Eligibility | None = None) -> str:
    """此人此刻不能对这一条投票的原因；能投票时为空串。只用于决定显示不显示按钮。

    与服务层用同一套判断（approvals.policy：自己的、升级得来的或受托的权限，合算一人的委托方投过没有），
    所以被升级拉进来的人与受托人也看得到按钮，按钮按下去也不会换来另一个理由。
    """
    if approval.status != Status.PENDING:
        return _("已结束，不能再投票")
    if approver is None:
        return _("后台账号未关联审批人")
    return (eligibility or Eligibility()).why_not(approval, approver)


def web_decide(*, user: AbstractBaseUser, approval: Approval | int, decision: str, reason: str) -> WebDecision:
    """以后台账号关联的审批人身份投一票。被拒绝的尝试由服务记入审批历史。"""
    approver = getattr(user, "approver", None)
    if decision == Vote.Decision.REJECT and not (reason or "").strip():
        reason = _("在管理后台拒绝")
    try:
        outcome = approval_decide(approval=approval, approver=approver, decision=decision, reason=reason,
                                  channel=Channel.ADMIN)
    except PermissionDenied as exc:
        text = account_not_linked_message(user) if approver is None else exc.message
        return WebDecision(False, False, messages.ERROR, text)
    except ApprovalError as exc:
        return WebDecision(False, False, messages.ERROR, exc.message)
    if outcome.final:
        text = _("已同意。") if decision == Vote.Decision.APPROVE else _("已拒绝。")
        return WebDecision(True, True, messages.SUCCESS, text)
    return WebDecision(True, False, messages.INFO, _("已记录你的同意（%(n)s/%(required)s），还需要其他审批人。") % {
        "n": outcome.received, "required": outcome.approval.required_approvals})


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=Vote.Decision.choices, error_messages={
        "required": gettext_lazy("缺少决定（同意或拒绝）。"),
        "invalid_choice": gettext_lazy("未知的决定：只能是同意或拒绝。"),
    })
    reason = forms.CharField(
        label=gettext_lazy("理由（拒绝时建议填写）"), required=False, max_length=MAX_REASON_LENGTH,
        widget=forms.Textarea(attrs={"rows": 2, "maxlength": MAX_REASON_LENGTH}),
        error_messages={"max_length": gettext_lazy("理由最多 %(limit_value)d 个字符（现在 %(show_value)d 个）。")},
    )
    next = forms.CharField(required=False, widget=forms.HiddenInput)


def _back(request: HttpRequest) -> str:
    """回到提交表单的页面（首页或后台的审批页）；外站地址一律不跳。"""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return reverse("home")


@require_POST
def approval_decide_view(request: HttpRequest, public_id: str) -> HttpResponse:
    """POST /approvals/<编号>/decide：同意或拒绝（CSRF 保护；只有后台账号能用）。结果与拒绝原因都作为页面消息显示。"""
    user = request.user
    if not user.is_authenticated:
        return redirect_to_login(reverse("home"), reverse("admin:login"))
    if not user.is_staff:
        return render(request, "error.html", {
            "title": _("不能审批"),
            "message": _("只有后台账号可以在网页上审批。审批人也可以在 Telegram 里点消息上的按钮。"),
        }, status=403)
    back = _back(request)
    try:
        approval = approval_get(public_id)
    except ApprovalNotFound as exc:
        messages.error(request, exc.message)
        return HttpResponseRedirect(back)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        problem = next(iter(form.errors.values()))[0]
        messages.error(request, _("%(id)s：%(message)s") % {"id": approval.public_id, "message": problem})
        return HttpResponseRedirect(back)
    result = web_decide(user=user, approval=approval, decision=form.cleaned_data["decision"],
                        reason=form.cleaned_data["reason"])
    messages.add_message(request, result.level, _("%(id)s：%(message)s") % {"id": approval.public_id,
                                                                           "message": result.text})
    return HttpResponseRedirect(back)
