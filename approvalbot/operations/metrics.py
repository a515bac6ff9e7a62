"""/metrics 的内容：各进程的计数器（approvalbot/metrics.py，多进程模式下从共享目录汇总），
加上从数据库读出的水平量（现在有多少待审批、多少 Jenkins 操作在等、发件箱里多少待发/失败）。

水平量用 Gauge：保留期清理删掉旧行时它们变小是对的；会变小的数字决不做成 Counter。
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Max, Min
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from approvals.models import Approval, JenkinsActionState, Status
from telegram_bot.models import MessageState, TelegramMessage

from .models import AlertState, BackupRun, BackupStatus, Heartbeat

logger = logging.getLogger(__name__)
QUEUE_TIMEOUT = 1.0


class LevelsCollector(Collector):
    """数据库里的水平量。每次抓取都查一次：几条 GROUP BY，走已有的索引。

    数据库不可用时不让整个 /metrics 失败（计数器照常导出）：approvalbot_database_up 为 0，其余水平量缺席。
    """

    def collect(self) -> Any:
        up = GaugeMetricFamily("approvalbot_database_up", "这次抓取时数据库是否可用（1/0）")
        try:
            families = list(self._levels())
        except DatabaseError as exc:
            logger.warning("/metrics：数据库不可用（%s）", exc.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _levels(self) -> Any:
        by_state = GaugeMetricFamily("approvalbot_approvals", "审批数（按状态）", labels=["status"])
        counts = dict(Approval.objects.values_list("status").annotate(n=Count("id")))
        for state in Status:
            by_state.add_metric([state.value], counts.get(state.value, 0))
        yield by_state

        actions = GaugeMetricFamily("approvalbot_jenkins_actions", "Jenkins 操作（按状态）", labels=["state"])
        counts = dict(Approval.objects.exclude(jenkins_action_state=JenkinsActionState.NONE)
                      .values_list("jenkins_action_state").annotate(n=Count("id")))
        for state in (JenkinsActionState.PENDING, JenkinsActionState.DONE, JenkinsActionState.FAILED):
            actions.add_metric([state.value], counts.get(state.value, 0))
        yield actions

        outbox = GaugeMetricFamily("approvalbot_telegram_outbox", "发件箱里的消息（按种类与状态）",
                                   labels=["kind", "state"])
        for kind, state, n in (TelegramMessage.objects.filter(state__in=[MessageState.PENDING, MessageState.FAILED])
                               .values_list("kind", "state").annotate(n=Count("id"))):
            outbox.add_metric([kind, state], n)
        yield outbox

        now = timezone.now()
        oldest = Approval.objects.filter(status=Status.PENDING).aggregate(created=Min("created_at"),
                                                                           expires=Min("expires_at"))
        age = GaugeMetricFamily("approvalbot_oldest_pending_age_seconds", "最老的待审批已等了多久（没有则 0）")
        age.add_metric([], (now - oldest["created"]).total_seconds() if oldest["created"] else 0)
        yield age
        overdue = GaugeMetricFamily("approvalbot_pending_overdue_seconds",
                                    "最早的截止时间已过去多久（没有过期的待审批则 0；超时扫描正常时只有几十秒）")
        overdue.add_metric([], max((now - oldest["expires"]).total_seconds(), 0) if oldest["expires"] else 0)
        yield overdue

        beats = GaugeMetricFamily("approvalbot_heartbeat_timestamp_seconds", "进程心跳的时间（beat、各 worker）",
                                  labels=["name"])
        for name, at in Heartbeat.objects.values_list("name", "at"):
            beats.add_metric([name], at.timestamp())
        yield beats

        backup = GaugeMetricFamily("approvalbot_backup_last_success_timestamp_seconds",
                                   "最近一次成功备份的完成时间（从没成功过则 0）")
        last = BackupRun.objects.filter(status=BackupStatus.OK).aggregate(at=Max("finished_at"))["at"]
        backup.add_metric([], last.timestamp() if last else 0)
        yield backup

        failing = GaugeMetricFamily("approvalbot_component_failing",
                                    "告警检查认定正在失败的组件（1 = 失败中，0 = 正常）", labels=["component"])
        for component, since in AlertState.objects.values_list("component", "failing_since"):
            failing.add_metric([component], 1 if since else 0)
        yield failing


def broker_queues() -> list[str]:
    """worker 消费的队列：默认队列与有人在等的 interactive 队列（settings.CELERY_TASK_QUEUES）。"""
    default = getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")
    return [default, *(name for name in getattr(settings, "CELERY_TASK_QUEUES", {}) if name != default)]


def queue_lengths() -> dict[str, int] | None:
    """各队列里排着的消息数：Redis 是列表长度（含各优先级子队列），文件系统 broker 是消息文件数。"""
    url = settings.CELERY_BROKER_URL
    queues = broker_queues()
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=QUEUE_TIMEOUT, socket_connect_timeout=QUEUE_TIMEOUT)
        try:
            # kombu 的 Redis 优先级：priority_steps 0、3、6、9，非 0 的放在 "<队列>\x06\x16<优先级>"
            with client.pipeline(transaction=False) as pipe:
                for queue in queues:
                    for name in [queue, *(f"{queue}\x06\x16{p}" for p in (3, 6, 9))]:
                        pipe.llen(name)
                counts = pipe.execute()
            return {queue: int(sum(counts[i * 4:(i + 1) * 4])) for i, queue in enumerate(queues)}
        finally:
            client.close()
    if url.startswith("filesystem://"):
        folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("data_folder_in", ""))
        if not folder.is_dir():
            return dict.fromkeys(queues, 0)
        return {queue: sum(1 for _p in folder.glob(f"*.{queue}.msg")) for queue in queues}
    return None


class QueueCollector(Collector):
    """broker 队列长度（抓取时量一次，超时很短）：worker 跟不上或停了时持续增长。"""

    def collect(self) -> Any:
        family = GaugeMetricFamily("approvalbot_celery_queue_length", "Celery 各队列里排着的任务数",
                                   labels=["queue"])
        try:
            lengths = queue_lengths()
        except Exception as exc:  # noqa: BLE001 - broker 不可用不该让 /metrics 失败
            logger.warning("/metrics：量不了队列长度（%s）", exc.__class__.__name__)
            lengths = None
        for queue, length in (lengths or {}).items():
            family.add_metric([queue], length)
        yield family


_levels = CollectorRegistry(auto_describe=False)
_levels.register(LevelsCollector())
_levels.register(QueueCollector())


def exposition() -> bytes:
    """Prometheus 文本：多进程模式下汇总共享目录里各进程的计数（外加本进程的 CPU、内存、文件描述符），
    否则（测试）是本进程的默认注册表；再加数据库里的水平量。"""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import ProcessCollector, multiprocess

        counters = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(counters)
        ProcessCollector(registry=counters)
    else:
        counters = REGISTRY
    return generate_latest(counters) + generate_latest(_levels)
