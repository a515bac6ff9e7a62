"""API token 的两个入口：create_api_token 的成功说明不写成错误（不进 stderr 变红，终端里与 token 一起显示），
后台表单用勾选框选权限范围（不再要人手写 JSON）。"""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import translation

from jenkins_bridge.models import ApiToken, hash_token

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def chinese():
    # 管理命令沿用线程里当前激活的语言：别的测试（英文请求）留下的语言不能影响这里
    with translation.override("zh-hans"):
        yield


class Terminal(io.StringIO):
    """像终端一样的输出：isatty() 为真。"""

    def isatty(self) -> bool:
        return True


def test_in_a_terminal_the_message_and_the_token_go_to_stdout():
    out, err = Terminal(), Terminal()

    call_command("create_api_token", "ci", "--scope", "jenkins", "--scope", "read", stdout=out, stderr=err)

    assert err.getvalue() == ""  # 成功不写进 stderr（终端里 stderr 是红色的）
    lines = out.getvalue().splitlines()
    assert "已创建 token「ci」，权限范围：jenkins, read。明文只显示这一次：" in lines[0]
    assert "\x1b[31" not in out.getvalue()  # 不是红色（错误的颜色）
    raw = lines[1]
    assert ApiToken.objects.get(name="ci").token_hash == hash_token(raw)
    assert "approval-api-token" in lines[2]


def test_redirected_stdout_holds_only_the_token():
    out, err = io.StringIO(), io.StringIO()

    call_command("create_api_token", "ci", "--scope", "jenkins", stdout=out, stderr=err)

    raw = out.getvalue().strip()
    assert "\n" not in raw and ApiToken.objects.get(name="ci").token_hash == hash_token(raw)
    assert "已创建 token「ci」" in err.getvalue() and "\x1b[" not in err.getvalue()


def test_admin_token_form_uses_checkboxes_for_scopes(admin_client):
    page = admin_client.get(reverse("admin:jenkins_bridge_apitoken_add")).content.decode()

    for scope in ("jenkins", "approve", "read"):
        assert f'type="checkbox" name="scopes" value="{scope}"' in page
    assert "Jenkins：申请审批、回报构建结果" in page

    response = admin_client.post(reverse("admin:jenkins_bridge_apitoken_add"), {
        "name": "jenkins-prod", "scopes": ["read", "jenkins"], "is_active": "on", "description": "",
        "signing_secret_env": "",
    }, follow=True)

    token = ApiToken.objects.get(name="jenkins-prod")
    assert token.scopes == ["jenkins", "read"]
    messages = [str(m) for m in response.context["messages"]]
    assert any(m.startswith("token 已生成，明文只显示这一次，请立即保存：apv_") for m in messages)


@pytest.mark.parametrize(("scopes", "error"), [
    ([], "至少选择一个权限范围。"),
    (["admin"], "未知的权限范围「admin」：只能是 jenkins、approve、read。"),
])
def test_admin_token_form_refuses_bad_scopes(admin_client, scopes, error):
    response = admin_client.post(reverse("admin:jenkins_bridge_apitoken_add"), {
        "name": "bad", "scopes": scopes, "is_active": "on"})

    assert response.status_code == 200
    assert error in response.content.decode()
    assert not ApiToken.objects.filter(name="bad").exists()


def test_editing_a_token_shows_its_scopes_ticked(admin_client):
    call_command("create_api_token", "ci", "--scope", "approve", stdout=io.StringIO(), stderr=io.StringIO())
    token = ApiToken.objects.get(name="ci")

    page = admin_client.get(reverse("admin:jenkins_bridge_apitoken_change", args=[token.pk])).content.decode()

    assert 'type="checkbox" name="scopes" value="approve" id="id_scopes_1" checked' in page
    assert 'value="jenkins" id="id_scopes_0" checked' not in page
