"""界面语言：zh-hans 是默认语言也是源语言，英文由 locale/en 提供。

- 翻译目录完整：每条 msgid 都有英文、没有 fuzzy；提交的 .mo 与 .po 一致（没有 gettext 的机器直接用 .mo）；
- 代码与模板里每个 gettext 调用都已收进 .po（f-string 里的调用 xgettext 看不到，会在这里暴露）；
- 网页（日志查看器、后台登录）与 HTTP API 按 Accept-Language 选语言，默认中文。
"""

from __future__ import annotations

import ast
import gettext
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.utils import translation
from rest_framework.test import APIClient

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "locale" / "en" / "LC_MESSAGES" / "django.po"
MO = PO.with_suffix(".mo")
SOURCE_DIRS = ("accounts", "approvals", "approvalbot", "jenkins_bridge", "telegram_bot")
GETTEXT_FUNCTIONS = {"_", "gettext", "gettext_lazy", "ngettext", "ngettext_lazy", "gettext_noop"}
PGETTEXT_FUNCTIONS = {"pgettext", "pgettext_lazy", "npgettext", "npgettext_lazy"}
TEMPLATE_TAG = re.compile(r"""{%\s*(?:translate|trans)\s+(["'])(.*?)\1""")

# 已知在 f-string 里调用 gettext、xgettext 收不到的字符串（(路径, msgid)；修好后删掉这里的条目）
KNOWN_UNEXTRACTED: set[tuple[str, str]] = set()


# ---------------------------------------------------------------- 读 .po（不依赖 polib / GNU gettext）


@dataclass
class Entry:
    msgid: str = ""
    msgctxt: str | None = None
    msgid_plural: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    line: int = 0

    @property
    def key(self) -> str:
        return self.msgid if self.msgctxt is None else f"{self.msgctxt}\x04{self.msgid}"


def parse_po(path: Path) -> list[Entry]:
    entries: list[Entry] = []
    entry = Entry()
    target: tuple[str, int] | None = None

    def finish() -> None:
        nonlocal entry, target
        if entry.line:
            entries.append(entry)
        entry, target = Entry(), None

    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line:
            finish()
            continue
        if line.startswith("#~"):  # 过时条目不参与
            continue
        if line.startswith("#,"):
            entry.flags |= {flag.strip() for flag in line[2:].split(",")}
            continue
        if line.startswith("#"):
            continue
        keyword, _sep, rest = line.partition(" ")
        if line.startswith('"'):
            value = ast.literal_eval(line)
        else:
            value = ast.literal_eval(rest)
            if keyword == "msgctxt" or (keyword == "msgid" and entry.line and target and target[0] == "msgstr"):
                finish()
            entry.line = entry.line or number
            match = re.fullmatch(r"msgstr\[(\d+)\]", keyword)
            target = ("msgstr", int(match.group(1))) if match else (keyword, 0)
            if target[0] == "msgstr":
                entry.msgstr[target[1]] = ""
        name, index = target
        if name == "msgid":
            entry.msgid += value
        elif name == "msgctxt":
            entry.msgctxt = (entry.msgctxt or "") + value
        elif name == "msgid_plural":
            entry.msgid_plural = (entry.msgid_plural or "") + value
        else:
            entry.msgstr[index] += value
    finish()
    return [e for e in entries if e.msgid]  # 去掉头部


@pytest.fixture(autouse=True)
def default_language_afterwards():
    """LocaleMiddleware 按 Accept-Language 激活的语言留在测试线程里：恢复默认，不影响之后的测试。"""
    yield
    translation.deactivate()


@pytest.fixture(scope="module")
def catalog() -> list[Entry]:
    return parse_po(PO)


def describe(entries: list[Entry]) -> str:
    return "\n".join(f"  django.po:{e.line}: {e.msgid!r}" for e in entries)


# ---------------------------------------------------------------- 翻译目录


def test_every_msgid_has_an_english_translation(catalog):
    missing = [e for e in catalog if not all(e.msgstr.values()) or not e.msgstr]
    fuzzy = [e for e in catalog if "fuzzy" in e.flags]
    assert not missing, "这些 msgid 还没有英文翻译（编辑 locale/en/LC_MESSAGES/django.po）：\n" + describe(missing)
    assert not fuzzy, "这些翻译是 fuzzy（makemessages 猜的），请核对后去掉 fuzzy：\n" + describe(fuzzy)


def test_translations_keep_placeholders_and_newlines(catalog):
    placeholder = re.compile(r"%\([a-z_]+\)[sd]|\{[a-z_]+\}|</?[a-z]+[^>]*>")
    broken = []
    for e in catalog:
        for text in e.msgstr.values():
            if sorted(placeholder.findall(e.msgid)) != sorted(placeholder.findall(text)):
                broken.append(e)
            elif (e.msgid.startswith("\n"), e.msgid.endswith("\n")) != (text.startswith("\n"), text.endswith("\n")):
                broken.append(e)
    assert not broken, "译文的占位符、HTML 标签或首尾换行与原文不一致：\n" + describe(broken)


def test_compiled_mo_matches_the_po(catalog):
    """.mo 随仓库提交：它必须是当前 .po 编译的结果（改了 .po 忘了 compilemessages 会在这里失败）。

    比较内容而不是修改时间：git 检出时文件的修改时间没有意义。"""
    assert MO.exists(), "缺少 django.mo：运行 manage.py compilemessages -l en"
    with MO.open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)._catalog  # type: ignore[attr-defined]
    compiled = {key: value for key, value in compiled.items() if key != ""}
    expected: dict[object, str] = {}
    for e in catalog:
        if e.msgid_plural is None:
            expected[e.key] = e.msgstr[0]
        else:
            expected.update({(e.key, index): text for index, text in e.msgstr.items()})
    stale = sorted(str(k) for k in expected.keys() ^ compiled.keys()) + sorted(
        str(k) for k in expected.keys() & compiled.keys() if expected[k] != compiled[k])
    assert not stale, "django.mo 与 django.po 不一致，请运行 manage.py compilemessages -l en：\n" + "\n".join(stale[:20])


def _gettext_calls(path: Path) -> list[tuple[int, str | None, str]]:
    calls = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        args = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None for a in node.args]
        if name in GETTEXT_FUNCTIONS and args and args[0] is not None:
            calls.append((node.lineno, None, args[0]))
        elif name in PGETTEXT_FUNCTIONS and len(args) > 1 and args[0] is not None and args[1] is not None:
            calls.append((node.lineno, args[0], args[1]))
    return calls


def test_every_gettext_string_in_code_and_templates_is_in_the_catalog(catalog):
    """新写的 _("…") 没有跑 makemessages、或写在 f-string 里（xgettext 看不见）都会在这里被发现。"""
    known = {e.key for e in catalog}
    missing = []
    for directory in SOURCE_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            relative = path.relative_to(ROOT).as_posix()
            for line, context, msgid in _gettext_calls(path):
                key = msgid if context is None else f"{context}\x04{msgid}"
                if key not in known and (relative, msgid) not in KNOWN_UNEXTRACTED:
                    missing.append(f"  {relative}:{line}: {msgid!r}")
    for path in sorted((ROOT / "templates").rglob("*.html")):
        text = path.read_text(encoding="utf-8")
        for match in TEMPLATE_TAG.finditer(text):
            if match.group(2) not in known:
                line = text.count("\n", 0, match.start()) + 1
                missing.append(f"  {path.relative_to(ROOT).as_posix()}:{line}: {match.group(2)!r}")
    assert not missing, (
        "这些字符串不在 locale/en/LC_MESSAGES/django.po 里：先运行 makemessages（见 README），"
        "f-string 里的 _() 要挪到 f-string 外面：\n" + "\n".join(missing)
    )


def test_settings_offer_chinese_by_default_and_english():
    assert settings.LANGUAGE_CODE == "zh-hans"
    assert [code for code, _label in settings.LANGUAGES] == ["zh-hans", "en"]
    assert "django.middleware.locale.LocaleMiddleware" in settings.MIDDLEWARE


# ---------------------------------------------------------------- 网页：Accept-Language，默认中文


@pytest.mark.django_db
def test_log_viewer_error_page_follows_accept_language(client: Client, shop_rule, make_approval):
    approval = make_approval()
    url = f"/logs/{approval.public_id}?t=forged"

    chinese = client.get(url)
    assert chinese.status_code == 403
    body = chinese.content.decode()
    assert '<html lang="zh-hans">' in body and "<title>无法查看日志</title>" in body
    assert "链接无效或已过期" in body

    english = Client().get(url, HTTP_ACCEPT_LANGUAGE="en")
    assert english.status_code == 403
    body = english.content.decode()
    assert '<html lang="en">' in body and "<title>Cannot view the log</title>" in body
    assert "The link is invalid or has expired." in body and "Jenkins release approval" in body
    # 语言切换按钮用各自语言的名字（「简体中文」）：除此之外英文页面上没有中文
    switch = re.search(r'<form class="lang-switch".*?</form>', body, re.S)
    assert switch and 'lang="zh-hans"' in switch.group(0)
    assert not re.search(r"[\u4e00-\u9fff]", body.replace(switch.group(0), "")), body

    missing = Client().get("/logs/0000ZZZZ", HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9")
    assert missing.status_code == 404 and "Approval &quot;0000ZZZZ&quot; not found." in missing.content.decode()


@pytest.mark.django_db
def test_admin_login_follows_accept_language_and_setlang(client: Client):
    chinese = client.get("/admin/login/")
    assert chinese.status_code == 200
    assert "发布审批后台" in chinese.content.decode() and "用户名" in chinese.content.decode()

    english = Client().get("/admin/login/", HTTP_ACCEPT_LANGUAGE="en")
    body = english.content.decode()
    assert "Release approval admin" in body and "Username" in body and "Log in" in body
    assert "发布审批后台" not in body

    # /i18n/setlang/ 记住选择（cookie），之后不看 Accept-Language
    chooser = Client()
    response = chooser.post("/i18n/setlang/", {"language": "en", "next": "/admin/login/"})
    assert response.status_code == 302
    assert "Release approval admin" in chooser.get("/admin/login/", HTTP_ACCEPT_LANGUAGE="zh-CN").content.decode()


# ---------------------------------------------------------------- HTTP API：Accept-Language，默认中文


WAIT = "/api/stage/approval/wait"


@pytest.mark.django_db
@pytest.mark.parametrize(("accept", "message"), [
    (None, "token 无效或已停用。"),
    ("zh-CN,zh;q=0.9", "token 无效或已停用。"),
    ("en", "The token is invalid or deactivated."),
    ("en-GB,en;q=0.8", "The token is invalid or deactivated."),
])
def test_api_error_message_follows_accept_language(accept, message):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer wrong-token")
    headers = {"HTTP_ACCEPT_LANGUAGE": accept} if accept else {}
    response = client.post(WAIT, {"JOB_NAME": "shop-backend", "BUILD_NUMBER": "1"}, format="json", **headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"
    assert response.json()["error"]["message"] == message


@pytest.mark.django_db
def test_api_validation_error_in_english(shop_rule):
    from approvals.models import Approval
    from jenkins_bridge.services import api_token_create

    _token, raw = api_token_create(name="i18n", scopes=["jenkins"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    body = {"JOB_NAME": "shop-backend"}
    english = client.post(WAIT, body, format="json", HTTP_ACCEPT_LANGUAGE="en").json()["error"]
    chinese = client.post(WAIT, body, format="json").json()["error"]
    assert english["code"] == chinese["code"]
    assert "Missing build number (build_number or BUILD_NUMBER)." in str(english)
    assert "缺少构建号（build_number 或 BUILD_NUMBER）。" in str(chinese)
    assert not Approval.objects.exists()


# ---------------------------------------------------------------- TELEGRAM_LANGUAGE 从环境变量读取


def _manage(*args: str, env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "TELEGRAM_LANGUAGE")}
    env.update({"APP_VAR_DIR": str(tmp_path), "APP_IGNORE_DOTENV": "1", **env_extra})
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_telegram_language_is_read_from_the_environment_and_checked(tmp_path):
    script = ("from django.conf import settings; from telegram_bot.language import bot_language;"
              "print(settings.TELEGRAM_LANGUAGE, bot_language())")
    default = _manage("shell", "--no-imports", "-c", script, env_extra={}, tmp_path=tmp_path)
    assert default.returncode == 0, default.stderr
    assert default.stdout.split() == ["zh-hans", "zh-hans"]
    english = _manage("shell", "--no-imports", "-c", script, env_extra={"TELEGRAM_LANGUAGE": "EN_us"},
                      tmp_path=tmp_path)
    assert english.returncode == 0, english.stderr
    assert english.stdout.split() == ["en-us", "en"]
    wrong = _manage("check", env_extra={"TELEGRAM_LANGUAGE": "fr"}, tmp_path=tmp_path)
    assert wrong.returncode != 0 and "TELEGRAM_LANGUAGE" in wrong.stderr and "'fr'" in wrong.stderr


@pytest.mark.django_db
def test_api_schema_follows_accept_language():
    client = APIClient()
    chinese = client.get("/api/schema", {"format": "json"}).json()
    english = client.get("/api/schema", {"format": "json"}, HTTP_ACCEPT_LANGUAGE="en").json()
    assert chinese["info"]["title"] == "Jenkins 发布审批服务 API"
    assert english["info"]["title"] == "Jenkins Release Approval API"
    wait = english["paths"]["/api/stage/approval/wait"]["post"]
    assert wait["summary"] == "Request (or look up) a release approval; can long-poll for the result"
    examples = wait["requestBody"]["content"]["application/json"]["examples"]
    assert "Poll an existing approval" in {example["summary"] for example in examples.values()}
