"""把各 app 在 schedules.py 里声明的周期任务同步进 django-celery-beat（幂等）。"""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils.module_loading import autodiscover_modules

from approvalbot.periodic import registered

MANAGED_PREFIX = "[auto] "


class Command(BaseCommand):
    help = "同步代码里声明的周期任务到 django-celery-beat；多次运行结果相同。"

    def handle(self, *args, **options) -> None:
        from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

        autodiscover_modules("schedules")
        specs = registered()
        wanted = {MANAGED_PREFIX + spec.name for spec in specs}
        with transaction.atomic():
            for spec in specs:
                defaults = {"task": spec.task, "kwargs": _json(spec.kwargs), "description": spec.description,
                            "enabled": True, "interval": None, "crontab": None}
                if spec.every_seconds is not None:
                    defaults["interval"], _ = IntervalSchedule.objects.get_or_create(
                        every=spec.every_seconds, period=IntervalSchedule.SECONDS
                    )
                else:
                    minute, hour, day, month, weekday = spec.crontab.split()
                    defaults["crontab"], _ = CrontabSchedule.objects.get_or_create(
                        minute=minute, hour=hour, day_of_month=day, month_of_year=month, day_of_week=weekday
                    )
                _task, created = PeriodicTask.objects.update_or_create(
                    name=MANAGED_PREFIX + spec.name, defaults=defaults
                )
                self.stdout.write(f"{'创建' if created else '更新'}: {spec.name} -> {spec.task}")
            # 代码里已删除的周期任务：停用而不是删除，保留运维痕迹
            stale = PeriodicTask.objects.filter(name__startswith=MANAGED_PREFIX).exclude(name__in=wanted)
            for task in stale.filter(enabled=True):
                task.enabled = False
                task.save(update_fields=["enabled"])
                self.stdout.write(f"停用: {task.name}")
        self.stdout.write(self.style.SUCCESS(f"周期任务已同步：{len(specs)} 个"))


def _json(value: dict) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)
