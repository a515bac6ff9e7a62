"""保留期清理（D8）与构建日志归档（G6）：删什么、绝不删什么、日志先归档、分批删除、重复运行无害。"""

from __future__ import annotations

import gzip
import json
import logging
import re
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.conf import settings as django_settings
from django.utils import timezone

from accounts.app_config import RETENTION_DEFAULT_DAYS, retention_days
from accounts.config import config_load
from approvals.builds import build_log_append, build_result_record
from approvals.history import event_record
from approvals.models import (
    Approval,
    ApprovalEvent,
    BuildLog,
    BuildResult,
    Channel,
    EventKind,
    Status,
    Vote,
)
from approvals.retention import approvals_purge_old
from approvals.services import approval_decide
from approvals.tasks import retention_purge_task
from jenkins_bridge.models import JenkinsServer

NOTHING = {"approvals": 0, "votes": 0, "events": 0, "build_logs": 0, "build_results": 0, "complete": True}


@pytest.fixture
def retention(settings, tmp_path, db):
    """通过真正的配置加载器写入 retention（0 = 永久保留也要能通过校验）。"""
    settings.APP_CONFIG_FILE = tmp_path / "app.json"
    settings.CONFIG_BACKUP_DIR = tmp_path / "backups"
    settings.LOG_ARCHIVE_DIR = str(tmp_path / "log-archive")

    def configure(**days: int) -> None:
        settings.APP_CONFIG_FILE.write_text(json.dumps({"retention": days}), encoding="utf-8")
        result = config_load("app")
        assert result.ok, result.errors

    return configure


def ago(days: float):
    return timezone.now() - timedelta(days=days)


def decided(make_approval, people, *, days_ago: float, decision: str = "approve") -> Approval:
    """days_ago 天前创建并被决定的审批（有一票与若干历史）。"""
    with time_machine.travel(ago(days_ago), tick=False):
        approval = make_approval()
        approval_decide(approval=approval, approver=people["approver"], decision=decision, channel=Channel.TELEGRAM)
    approval.refresh_from_db()
    assert approval.status != Status.PENDING
    return approval


def pending(make_approval, *, days_ago: float) -> Approval:
    with time_machine.travel(ago(days_ago), tick=False):
        return make_approval()


def log_at(*, days_ago: float, job: str = "shop-backend", build: int = 1, text: str = "构建日志 ✅\n",
           server: JenkinsServer | None = None) -> BuildLog:
    with time_machine.travel(ago(days_ago), tick=False):
        return build_log_append(jenkins_server=server or JenkinsServer.objects.default(), job_name=job, build_number=build,
                                text=text, next_start=len(text.encode()), complete=True)


def result_at(*, days_ago: float, job: str = "lonely-job", build: int = 1) -> BuildResult:
    with time_machine.travel(ago(days_ago), tick=False):
        record, _created = build_result_record(job_name=job, build_number=build, result="SUCCESS")
    return record


# ---------------------------------------------------------------- 审批与历史


def test_old_finished_approvals_go_with_their_votes_and_history(retention, shop_rule, people, make_approval):
    retention(approvals_days=365)
    old_approved = decided(make_approval, people, days_ago=400)
    old_rejected = decided(make_approval, people, days_ago=400, decision="reject")
    recent = decided(make_approval, people, days_ago=300)
    # 旧审批的构建日志与结果按各自的期限处理：审批删了，它们留下并断开关联
    log = log_at(days_ago=1, job=old_approved.job_name, build=old_approved.build_number)
    result = result_at(days_ago=1, job=old_approved.job_name, build=old_approved.build_number)
    old_ids = [old_approved.pk, old_rejected.pk]
    old_votes = Vote.objects.filter(approval_id__in=old_ids).count()
    old_events = ApprovalEvent.objects.filter(approval_id__in=old_ids).count()
    assert old_votes == 2 and old_events >= 4

    counts = approvals_purge_old()

    assert counts == {**NOTHING, "approvals": 2, "votes": old_votes, "events": old_events}
    assert list(Approval.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not Vote.objects.filter(approval_id__in=old_ids).exists()
    assert not ApprovalEvent.objects.filter(approval_id__in=old_ids).exists()
    assert Vote.objects.filter(approval=recent).count() == 1
    log.refresh_from_db()
    result.refresh_from_db()
    assert log.approval_id is None and result.approval_id is None


def test_pending_approval_is_never_deleted_however_old(retention, shop_rule, people, make_approval):
    retention(approvals_days=1, events_days=1)
    ancient = pending(make_approval, days_ago=3000)  # 截止时间早已过，但超时扫描还没处理它：仍是待审批
    with time_machine.travel(ago(2000), tick=False):
        event_record(approval=ancient, kind=EventKind.REMINDER, details={"number": 1})
    events_before = ApprovalEvent.objects.filter(approval=ancient).count()

    counts = approvals_purge_old()

    assert counts == NOTHING
    ancient.refresh_from_db()
    assert ancient.status == Status.PENDING
    assert ApprovalEvent.objects.filter(approval=ancient).count() == events_before == 2


def test_old_history_is_cut_only_for_finished_approvals(retention, shop_rule, people, make_approval):
    retention(approvals_days=365, events_days=30)
    finished = decided(make_approval, people, days_ago=100)
    with time_machine.travel(ago(5), tick=False):
        kept = event_record(approval=finished, kind=EventKind.BUILD_RESULT, details={"result": "SUCCESS"})
    live = pending(make_approval, days_ago=100)
    live_events = set(ApprovalEvent.objects.filter(approval=live).values_list("pk", flat=True))
    old_finished_events = ApprovalEvent.objects.filter(approval=finished).exclude(pk=kept.pk).count()
    assert old_finished_events >= 2

    counts = approvals_purge_old()

    assert counts == {**NOTHING, "events": old_finished_events}
    assert list(ApprovalEvent.objects.filter(approval=finished).values_list("pk", flat=True)) == [kept.pk]
    assert set(ApprovalEvent.objects.filter(approval=live).values_list("pk", flat=True)) == live_events
    assert Approval.objects.count() == 2  # 审批本身未到期，只是历史变短
    assert Vote.objects.filter(approval=finished).count() == 1


# ---------------------------------------------------------------- 构建日志（G6）与构建结果


def test_old_build_logs_are_archived_as_gzip_then_deleted(retention, settings):
    retention(build_logs_days=30)
    text = "第一行\n[INFO] 构建成功 🚀\n" * 50
    folder_log = log_at(days_ago=40, job="folder/shop-backend", build=7, text=text)
    other = JenkinsServer.objects.create(name="jenkins-b", url="http://127.0.0.1:9/")
    other_log = log_at(days_ago=40, job="folder/shop-backend", build=7, text="另一台 Jenkins\n", server=other)
    sneaky = log_at(days_ago=40, job="../../etc", build=1, text="路径穿越\n")
    fresh = log_at(days_ago=10, job="shop-backend", build=8)

    counts = approvals_purge_old()

    assert counts == {**NOTHING, "build_logs": 3}
    assert list(BuildLog.objects.values_list("pk", flat=True)) == [fresh.pk]
    root = Path(settings.LOG_ARCHIVE_DIR)
    archive = root / "folder" / "shop-backend" / "7.log.gz"
    assert gzip.decompress(archive.read_bytes()).decode("utf-8") == text
    # 非默认 Jenkins 多一层服务器名，同名任务同构建号不会互相覆盖
    assert gzip.decompress((root / "jenkins-b" / "folder" / "shop-backend" / "7.log.gz").read_bytes()) == \
        "另一台 Jenkins\n".encode()
    # 任务名里的 .. 不会让文件写到归档目录之外
    assert gzip.decompress((root / "_" / "_" / "etc" / "1.log.gz").read_bytes()) == "路径穿越\n".encode()
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == ["_/_/etc/1.log.gz", "folder/shop-backend/7.log.gz", "jenkins-b/folder/shop-backend/7.log.gz"]
    assert not BuildLog.objects.filter(pk__in=[folder_log.pk, other_log.pk, sneaky.pk]).exists()


def test_archiving_can_be_turned_off(retention, settings, tmp_path):
    retention(build_logs_days=30)
    settings.LOG_ARCHIVE_DIR = ""
    log_at(days_ago=40)

    assert approvals_purge_old() == {**NOTHING, "build_logs": 1}
    assert not BuildLog.objects.exists()
    assert not (tmp_path / "log-archive").exists()


def test_logs_stay_when_the_archive_cannot_be_written(retention, settings, tmp_path, caplog):
    retention(build_logs_days=30, build_results_days=30)
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("占位", encoding="utf-8")
    settings.LOG_ARCHIVE_DIR = str(blocked)
    log = log_at(days_ago=40)
    result_at(days_ago=40)

    with caplog.at_level(logging.ERROR, logger="approvals.retention"):
        counts = approvals_purge_old()

    # 数据库里是唯一副本：写不出归档就不删；其他种类照常清理
    assert counts == {**NOTHING, "build_results": 1, "complete": False}
    assert BuildLog.objects.filter(pk=log.pk).exists()
    assert "shop-backend#1" in caplog.text and "归档" in caplog.text


def test_old_build_results_are_pruned(retention, shop_rule, make_approval):
    retention(build_results_days=180)
    old = result_at(days_ago=200, job="lonely-job", build=1)
    fresh = result_at(days_ago=100, job="lonely-job", build=2)

    assert approvals_purge_old() == {**NOTHING, "build_results": 1}
    assert list(BuildResult.objects.values_list("pk", flat=True)) == [fresh.pk]
    assert old.pk != fresh.pk


# ---------------------------------------------------------------- 配置


def test_zero_days_keeps_everything_forever(retention, shop_rule, people, make_approval, settings):
    retention(approvals_days=0, events_days=0, build_logs_days=0, build_results_days=0)
    decided(make_approval, people, days_ago=5000)
    log_at(days_ago=5000)
    result_at(days_ago=5000)
    before = (Approval.objects.count(), Vote.objects.count(), ApprovalEvent.objects.count(),
              BuildLog.objects.count(), BuildResult.objects.count())

    assert approvals_purge_old() == NOTHING
    after = (Approval.objects.count(), Vote.objects.count(), ApprovalEvent.objects.count(),
             BuildLog.objects.count(), BuildResult.objects.count())
    assert after == before
    assert not Path(settings.LOG_ARCHIVE_DIR).exists()


def test_missing_keys_use_the_defaults(retention):
    assert retention_days() == RETENTION_DEFAULT_DAYS  # 没有加载过 app.json
    assert RETENTION_DEFAULT_DAYS == {"approvals": 365, "events": 365, "build_logs": 30, "build_results": 180}
    retention(build_logs_days=7, approvals_days=0)
    assert retention_days() == {"approvals": 0, "events": 365, "build_logs": 7, "build_results": 180}


def test_unconfigured_defaults_apply(retention, shop_rule, people, make_approval):
    """没写 retention 也会清理（缺省不等于永久保留）：默认 365/365/30/180 天。"""
    decided(make_approval, people, days_ago=366)
    kept = decided(make_approval, people, days_ago=364)
    log_at(days_ago=31, build=1)
    log_at(days_ago=29, build=2)
    result_at(days_ago=181, build=1)
    result_at(days_ago=179, build=2)

    counts = approvals_purge_old()

    assert (counts["approvals"], counts["build_logs"], counts["build_results"]) == (1, 1, 1)
    assert list(Approval.objects.values_list("pk", flat=True)) == [kept.pk]


# ---------------------------------------------------------------- 分批、时间预算、幂等


def bulk_old_rows(n: int, people, *, days_ago: float = 400) -> None:
    """n 条旧的终态审批（各一票一条历史）+ n 条旧日志 + n 条旧构建结果；直接 bulk_create 以免测试变慢。"""
    server = JenkinsServer.objects.default()
    when = ago(days_ago)
    with time_machine.travel(when, tick=False):
        Approval.objects.bulk_create(
            [Approval(public_id=f"R{i:07d}", jenkins_server=server, job_name="bulk-job", build_number=i,
                      project="bulk", environment="test", expires_at=when, status=Status.APPROVED,
                      decided_at=when) for i in range(n)],
            batch_size=500,
        )
        ids = list(Approval.objects.filter(job_name="bulk-job").values_list("pk", flat=True))
        Vote.objects.bulk_create([Vote(approval_id=pk, approver=people["approver"], decision="approve",
                                       channel=Channel.TELEGRAM) for pk in ids], batch_size=500)
        ApprovalEvent.objects.bulk_create([ApprovalEvent(approval_id=pk, kind=EventKind.APPROVED) for pk in ids],
                                          batch_size=500)
        BuildLog.objects.bulk_create([BuildLog(jenkins_server=server, job_name="bulk-job", build_number=i,
                                               content=f"log {i}\n", is_complete=True) for i in range(n)],
                                     batch_size=500)
        BuildResult.objects.bulk_create([BuildResult(jenkins_server=server, job_name="bulk-job", build_number=i,
                                                     result="SUCCESS") for i in range(n)], batch_size=500)


def largest_in_list(queries: list[dict]) -> int:
    """这些语句里最长的 IN (...) 列表有几个 id：一条语句最多碰一批的行。"""
    lists = [m.group(1) for q in queries for m in re.finditer(r" IN \(([^()]*)\)", q["sql"])]
    return max(len(items.split(",")) for items in lists)


def id_selects(queries: list[dict], table: str) -> int:
    return sum(1 for q in queries if q["sql"].startswith("SELECT") and " AS `pk` FROM " in q["sql"].replace('"', "`")
               and f"FROM `{table}`" in q["sql"].replace('"', "`"))


def test_deletes_in_bounded_batches_with_queries_per_batch_not_per_row(
    retention, people, settings, django_assert_max_num_queries
):
    retention()  # 默认天数
    bulk_old_rows(3000, people)

    # 15,000 行（每类 3,000）分 3 批：每批审批约 26 条语句（级联删除/置空，Django 每 100 个 id 一条 DELETE），
    # 日志 4 条（选 id、读长度、读内容、删除），结果约 7 条（级联删除发件箱里的构建结果通知）。
    # 若按行删除或按行读日志，会是上万条
    with django_assert_max_num_queries(140) as captured:
        counts = approvals_purge_old(batch=1000)

    assert counts == {"approvals": 3000, "votes": 3000, "events": 3000, "build_logs": 3000,
                      "build_results": 3000, "complete": True}
    assert not (Approval.objects.exists() or Vote.objects.exists() or ApprovalEvent.objects.exists()
                or BuildLog.objects.exists() or BuildResult.objects.exists())
    assert len(list(Path(settings.LOG_ARCHIVE_DIR).joinpath("bulk-job").iterdir())) == 3000
    assert largest_in_list(captured.captured_queries) <= 1000
    # 3 个满批 + 1 次确认已空
    assert id_selects(captured.captured_queries, "approvals_approval") == 4


def test_smaller_batches_mean_smaller_statements(retention, people, django_assert_max_num_queries):
    retention()
    bulk_old_rows(300, people)

    with django_assert_max_num_queries(120) as captured:
        counts = approvals_purge_old(batch=100)

    assert counts["approvals"] == counts["build_logs"] == counts["build_results"] == 300
    assert largest_in_list(captured.captured_queries) <= 100
    assert id_selects(captured.captured_queries, "approvals_buildresult") == 4


def test_time_budget_stops_between_batches_and_the_next_run_finishes(retention, shop_rule, people, make_approval):
    retention()
    decided(make_approval, people, days_ago=400)

    assert approvals_purge_old(time_budget=0) == {**NOTHING, "complete": False}
    assert Approval.objects.count() == 1

    assert approvals_purge_old()["approvals"] == 1
    assert not Approval.objects.exists()


def test_running_twice_is_harmless(retention, shop_rule, people, make_approval, settings):
    retention()
    decided(make_approval, people, days_ago=400)
    recent = decided(make_approval, people, days_ago=1)
    log_at(days_ago=40)
    result_at(days_ago=200)
    first = approvals_purge_old()
    archive = Path(settings.LOG_ARCHIVE_DIR) / "shop-backend" / "1.log.gz"
    archived = archive.read_bytes()

    assert approvals_purge_old() == NOTHING
    assert first["approvals"] == first["build_logs"] == first["build_results"] == 1
    assert list(Approval.objects.values_list("pk", flat=True)) == [recent.pk]
    assert archive.read_bytes() == archived


# ---------------------------------------------------------------- 周期任务


def test_daily_task_runs_the_purge_and_logs_one_line(retention, shop_rule, people, make_approval, caplog):
    retention()
    decided(make_approval, people, days_ago=400)

    events = ApprovalEvent.objects.count()

    with caplog.at_level(logging.INFO, logger="approvals.retention"):
        counts = retention_purge_task.apply().result

    assert counts["approvals"] == 1 and counts["complete"] is True
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("保留期清理")]
    assert lines == [f"保留期清理：审批 1（投票 1）、历史 {events}、构建日志 0、构建结果 0"]
    spec = django_settings.CELERY_BEAT_SCHEDULE["[auto] approvals.retention_purge"]
    assert spec["task"] == "approvals.tasks.retention_purge_task"
    assert (spec["schedule"].minute, spec["schedule"].hour) == ({30}, {3})
