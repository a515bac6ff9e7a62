"""/metrics 的内容：各进程的计数器（approvalbot/metrics.py，多进程模式下从共享目录汇总），
加上从数据库读出的水平量（现在有多少待审批、多少 Jenkins 操作在等、发件箱里多少待发/失败）。

水平量用 Gauge：保留期清理删掉旧行时它们变小是对的；会变小的数字决不做成 Counter。
"""

from __future__ import annotations

import os
from typing import Any

from django.db.models import Count
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from approvals.models import Approval, JenkinsActionState, Status
from telegram_bot.models import MessageState, TelegramMessage


class LevelsCollector(Collector):
    """数据库里的水平量。每次抓取都查一次：几条 GROUP BY，走已有的索引。"""

    def collect(self) -> Any:
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


_levels = CollectorRegistry(auto_describe=False)
_levels.register(LevelsCollector())


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
