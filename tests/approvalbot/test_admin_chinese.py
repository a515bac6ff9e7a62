"""中文后台里不露英文、不露规格编号：多选框的 JavaScript 文案、周期任务各页、模型的帮助文字与 README。"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.urls import reverse

ROOT = Path(settings.BASE_DIR)
SPEC_CODE = re.compile(r"[（(][A-Z]\d{1,2}[）)、,，]|[（(](?:[A-Z]\d{1,2}[、,，/–-]?)+[）)]")


@pytest.mark.django_db
def test_admin_javascript_catalog_has_the_chinese_picker_texts(admin_client):
    """filter_horizontal（项目规则的审批人）里的说明与按钮：Django 自带的 zh_Hans 目录缺这几条。"""
    script = admin_client.get(reverse("admin:jsi18n"), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    catalog = json.loads(re.search(r"const newcatalog = (\{.*?\});", script, re.S).group(1))

    assert catalog['Choose %s by selecting them and then select the "Choose" arrow button.'] == (
        "选中要添加的%s，然后点击“选择”箭头按钮。")
    assert catalog['Remove %s by selecting them and then select the "Remove" arrow button.'] == (
        "选中要移除的%s，然后点击“移除”箭头按钮。")
    for msgid in ("Choose all %s", "Choose selected %s", "Remove all %s", "Remove selected %s", "(click to clear)"):
        assert re.search(r"[\u4e00-\u9fff]", catalog[msgid]), msgid
    # 英文界面不受影响
    english = admin_client.get(reverse("admin:jsi18n"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Choose %s by selecting" not in english  # 英文没有目录条目：直接用 msgid


def _visible_text(html: str) -> str:
    html = re.sub(r"<(script|style)\b.*?</\1>", "", html, flags=re.S)
    html = re.sub(r'<thead class="visually-hidden">.*?</thead>', "", html, flags=re.S)  # 只给读屏软件
    return re.sub(r"<[^>]+>", "\n", html)


@pytest.mark.django_db
def test_periodic_task_pages_are_chinese(admin_client):
    from django_celery_beat.models import ClockedSchedule, IntervalSchedule, PeriodicTask

    every = IntervalSchedule.objects.create(every=30, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.create(name="[auto] approvals.reminder_sweep", task="approvals.tasks.reminder_sweep_task",
                                       interval=every)
    clocked = ClockedSchedule.objects.create(clocked_time="2026-12-01T00:00:00Z")
    PeriodicTask.objects.create(name="一次性", task="approvals.tasks.timeout_sweep_task", clocked=clocked, one_off=True)
    pages = {
        "list": reverse("admin:django_celery_beat_periodictask_changelist"),
        "change": reverse("admin:django_celery_beat_periodictask_change", args=[task.pk]),
        "interval": reverse("admin:django_celery_beat_intervalschedule_change", args=[every.pk]),
        "clocked": reverse("admin:django_celery_beat_clockedschedule_change", args=[clocked.pk]),
    }
    english = ("Scheduler", "Task Name", "Arguments", "Execution Options", "Crontab translation",
               "Periodic Tasks Using This Schedule")
    for name, url in pages.items():
        response = admin_client.get(url, HTTP_ACCEPT_LANGUAGE="zh-hans")
        assert response.status_code == 200, name
        text = _visible_text(response.content.decode())
        for word in english:
            assert word not in text, (name, word)
    change = _visible_text(admin_client.get(pages["change"]).content.decode())
    assert "调度" in change and "参数" in change and "执行选项" in change
    assert "使用这个调度的周期任务" in _visible_text(admin_client.get(pages["clocked"]).content.decode())
    assert "调度方式" in _visible_text(admin_client.get(pages["list"]).content.decode())


@pytest.mark.parametrize("app_label", ["approvals", "jenkins_bridge", "telegram_bot"])
def test_help_texts_carry_no_spec_codes(app_label):
    for model in apps.get_app_config(app_label).get_models():
        for field in model._meta.get_fields():
            help_text = str(getattr(field, "help_text", "") or "")
            assert not SPEC_CODE.search(help_text), (model.__name__, field.name, help_text)


def test_readme_carries_no_spec_codes():
    text = (ROOT / "README.md").read_text(encoding="utf-8")

    assert not SPEC_CODE.findall(text), SPEC_CODE.findall(text)
    for path in (ROOT / "docs" / "jenkins").rglob("*"):
        if path.is_file():
            assert not SPEC_CODE.findall(path.read_text(encoding="utf-8")), path
