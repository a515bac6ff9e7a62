"""Prometheus 指标（X10）。

审批相关的数字从数据库算出，而不是进程内计数：Jenkins 操作在 worker 里、Telegram 发送在 worker 里，
web 进程里的计数器看不到它们；从数据库取则所有进程一致、重启也不归零。
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from approvals.models import Approval, ApprovalEvent, EventKind, Status

# 决定耗时的桶（秒）：从半分钟到一天
LATENCY_BUCKETS = (30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


class ApprovalCollector(Collector):
    def collect(self) -> Any:
        by_state = GaugeMetricFamily("approvalbot_approvals", "审批数（按状态）", labels=["status"])
        counts = {row["status"]: row["n"] for row in Approval.objects.values("status").annotate(n=Count("id"))}
        for state in Status:
            by_state.add_metric([state.value], counts.get(state.value, 0))
        yield by_state

        decisions = CounterMetricFamily("approvalbot_decisions", "已做出的决定（按结果与渠道）",
                                        labels=["status", "channel"])
        rows = (Approval.objects.exclude(status=Status.PENDING)
                .values("status", "decision_channel").annotate(n=Count("id")))
        for row in rows:
            decisions.add_metric([row["status"], row["decision_channel"] or "system"], row["n"])
        yield decisions

        yield self._latency()

        errors = CounterMetricFamily("approvalbot_external_call_errors", "外部调用失败次数", labels=["system"])
        event_counts = {row["kind"]: row["n"] for row in ApprovalEvent.objects.filter(
            kind__in=[EventKind.JENKINS_ERROR, EventKind.NOTIFY_FAILED]).values("kind").annotate(n=Count("id"))}
        errors.add_metric(["jenkins"], event_counts.get(EventKind.JENKINS_ERROR, 0))
        errors.add_metric(["telegram"], event_counts.get(EventKind.NOTIFY_FAILED, 0))
        yield errors

        failed = GaugeMetricFamily("approvalbot_jenkins_actions", "Jenkins 操作状态（按状态）", labels=["state"])
        for row in Approval.objects.exclude(jenkins_action_state="none").values("jenkins_action_state").annotate(
                n=Count("id")):
            failed.add_metric([row["jenkins_action_state"]], row["n"])
        yield failed

        from .longpoll import watcher

        yield GaugeMetricFamily("approvalbot_longpoll_waiters", "本进程中正在长轮询等待的请求数",
                                value=watcher.waiting)

    @staticmethod
    def _latency() -> HistogramMetricFamily:
        decided = Approval.objects.filter(status__in=[Status.APPROVED, Status.REJECTED], decided_at__isnull=False)
        aggregates: dict[str, Any] = {
            f"le_{bucket}": Count("id", filter=Q(decided_at__lte=F("created_at") + timedelta(seconds=bucket)))
            for bucket in LATENCY_BUCKETS
        }
        aggregates["total"] = Count("id")
        aggregates["sum"] = Sum(ExpressionWrapper(F("decided_at") - F("created_at"), output_field=DurationField()))
        row = decided.aggregate(**aggregates)
        buckets = [(str(float(b)), row[f"le_{b}"]) for b in LATENCY_BUCKETS]
        buckets.append(("+Inf", row["total"]))
        total: timedelta | None = row["sum"]
        return HistogramMetricFamily("approvalbot_decision_latency_seconds", "从申请到决定的耗时",
                                     buckets=buckets, sum_value=total.total_seconds() if total else 0.0)


registry = CollectorRegistry(auto_describe=False)
registry.register(ApprovalCollector())
