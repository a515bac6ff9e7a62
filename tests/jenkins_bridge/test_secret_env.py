"""密钥变量名（C9）：后台里填的是环境变量名；不能借它读出本服务自己的密钥（SECRET_KEY 之类）再发给任意地址。"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from jenkins_bridge.client import JenkinsClient, JenkinsError
from jenkins_bridge.models import ApiToken, JenkinsServer, read_secret_env

pytestmark = pytest.mark.django_db

ADD_SERVER = "/admin/jenkins_bridge/jenkinsserver/add/"


@pytest.fixture
def staff(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def server_form(**overrides):
    return {"name": "evil", "url": "https://attacker.example/", "username": "x", "api_token_env": "",
            "webhook_auth_header_env": "", "approver_parameter": "APPROVER", "timeout_seconds": "10",
            "is_active": "on", **overrides}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("api_token_env", "SECRET_KEY", "本服务自己的密钥或设置"),
    ("api_token_env", "DJANGO_SECRET_KEY", "本服务自己的密钥或设置"),
    ("api_token_env", "DJANGO_SECRET_KEY_FILE", "本服务自己的密钥或设置"),
    ("api_token_env", "DATABASE_URL", "本服务自己的密钥或设置"),
    ("webhook_auth_header_env", "TELEGRAM_BOT_TOKEN", "本服务自己的密钥或设置"),
    ("webhook_auth_header_env", "APPROVAL_API_TOKEN", "本服务自己的密钥或设置"),
    ("api_token_env", "jenkins_token", "只能由大写字母、数字和下划线组成"),
    ("api_token_env", "X", "只能由大写字母、数字和下划线组成"),
])
def test_admin_refuses_app_secrets_and_odd_names_with_a_clear_message(staff, field, value, message):
    response = staff.post(ADD_SERVER, server_form(**{field: value}))
    assert response.status_code == 200  # 表单带错误重新显示，没有跳转
    assert message in response.content.decode()
    assert not JenkinsServer.objects.exists()


def test_admin_accepts_an_ordinary_token_variable(staff):
    response = staff.post(ADD_SERVER, server_form(api_token_env="JENKINS_PROD_API_TOKEN"))
    assert response.status_code == 302
    assert JenkinsServer.objects.get().api_token_env == "JENKINS_PROD_API_TOKEN"


def test_api_token_signing_secret_variable_is_validated(staff):
    response = staff.post("/admin/jenkins_bridge/apitoken/add/", {
        "name": "ci", "scopes": '["jenkins"]', "signing_secret_env": "APPROVAL_API_SIGNING_SECRET",
        "description": "", "is_active": "on"})
    assert response.status_code == 200 and "本服务自己的密钥或设置" in response.content.decode()
    assert not ApiToken.objects.exists()
    with pytest.raises(CommandError):
        call_command("create_api_token", "ci", "--scope", "jenkins", "--signing-secret-env", "SECRET_KEY")
    assert not ApiToken.objects.exists()


def test_default_jenkins_token_variable_stays_allowed():
    JenkinsServer(name="default", url="http://jenkins.example/", api_token_env="JENKINS_API_TOKEN").full_clean()
    with pytest.raises(ValidationError):
        JenkinsServer(name="x", url="http://jenkins.example/", api_token_env="SECRET_KEY").full_clean()


def test_reading_refuses_app_secrets_even_if_written_straight_to_the_database(settings, monkeypatch):
    """纵深防御：绕过后台直接写进库的名字，读取时同样拒绝；也不再从 Django settings 里读任意设置。"""
    monkeypatch.setenv("DJANGO_SECRET_KEY", "the-real-secret")
    assert settings.SECRET_KEY
    assert read_secret_env("SECRET_KEY") == ""
    assert read_secret_env("DJANGO_SECRET_KEY") == ""
    assert read_secret_env("TIME_ZONE") == ""  # 普通设置也读不到（不是环境变量）
    monkeypatch.setenv("JENKINS_PROD_API_TOKEN", "ok-token")
    assert read_secret_env("JENKINS_PROD_API_TOKEN") == "ok-token"


def test_secret_can_come_from_a_file(tmp_path, monkeypatch):
    path = tmp_path / "token"
    path.write_text("from-file\n", encoding="utf-8")
    monkeypatch.setenv("JENKINS_PROD_API_TOKEN_FILE", str(path))
    assert read_secret_env("JENKINS_PROD_API_TOKEN") == "from-file"


def test_default_jenkins_token_is_read_from_env_or_settings(settings, monkeypatch):
    monkeypatch.delenv("JENKINS_API_TOKEN", raising=False)
    settings.JENKINS_API_TOKEN = "from-settings"
    assert read_secret_env("JENKINS_API_TOKEN") == "from-settings"
    monkeypatch.setenv("JENKINS_API_TOKEN", "from-env")
    assert read_secret_env("JENKINS_API_TOKEN") == "from-env"


def test_check_connection_never_sends_a_refused_secret(staff, fake_jenkins, monkeypatch):
    monkeypatch.setenv("DJANGO_SECRET_KEY", "the-real-secret")
    server = JenkinsServer.objects.create(name="evil", url=fake_jenkins.url, username="svc",
                                          api_token_env="SECRET_KEY")
    with pytest.raises(JenkinsError) as exc:
        JenkinsClient(server)
    assert exc.value.permanent and exc.value.kind == "not_configured"
    response = staff.post("/admin/jenkins_bridge/jenkinsserver/", {
        "action": "check_connection", "_selected_action": [server.pk]}, follow=True)
    assert "连接失败" in response.content.decode()
    assert not fake_jenkins.requests  # 一个请求都没发出去，密钥自然也没有


def test_webhook_header_from_a_refused_variable_is_not_sent(jenkins_server, fake_jenkins, monkeypatch):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:bot-token")
    JenkinsServer.objects.filter(pk=jenkins_server.pk).update(webhook_auth_header_env="TELEGRAM_BOT_TOKEN")
    server = JenkinsServer.objects.get(pk=jenkins_server.pk)
    hook = fake_jenkins.register_webhook("h")
    JenkinsClient(server).post_webhook(hook, {"approved": True})
    [post] = fake_jenkins.calls("POST", "/webhook-step/h")
    assert "Authorization" not in post.headers
