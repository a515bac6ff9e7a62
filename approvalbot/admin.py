"""后台里 django-celery-beat 的几页说中文。

它的中文翻译缺了几条（“Arguments”“Execution Options”“Periodic Tasks Using This Schedule”），
有的根本没走 gettext（字段名 “Task Name”、列表列 “Scheduler”、只读字段 “Crontab translation”）：
中文后台里露出英文。这里以子类重新注册这几个后台，只换标题与标签，行为不变。
"""

from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext_lazy as _
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule


class TaskNameFilter(admin.AllValuesFieldListFilter):
    """按任务筛选：标题取自模型的 verbose_name（“Task Name”，没有翻译），这里换掉。"""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.title = _("任务名")


class PeriodicTaskAdmin(beat_admin.PeriodicTaskAdmin):
    list_display = ("name", "enabled", "scheduler_display", "interval", "start_time", "last_run_at", "one_off")
    list_filter = ["enabled", "one_off", ("task", TaskNameFilter), "start_time", "last_run_at"]
    fieldsets = (
        (None, beat_admin.PeriodicTaskAdmin.fieldsets[0][1]),
        (_("调度"), beat_admin.PeriodicTaskAdmin.fieldsets[1][1]),
        (_("参数"), beat_admin.PeriodicTaskAdmin.fieldsets[2][1]),
        (_("执行选项"), beat_admin.PeriodicTaskAdmin.fieldsets[3][1]),
    )

    @admin.display(description=_("调度方式"))
    def scheduler_display(self, obj: PeriodicTask) -> object:
        return obj.scheduler

    @admin.display(description=_("Crontab 的含义"))
    def crontab_translation(self, obj: PeriodicTask) -> str:
        return obj.crontab.human_readable if obj.crontab else "-"


class PeriodicTaskInline(beat_admin.PeriodicTaskInline):
    verbose_name = _("使用这个调度的周期任务")
    verbose_name_plural = verbose_name
    fields = ("name", "task_name", "args", "kwargs")
    readonly_fields = fields

    @admin.display(description=_("任务名"))
    def task_name(self, obj: PeriodicTask) -> str:
        return obj.task


def _with_inline(base: type[admin.ModelAdmin]) -> type[admin.ModelAdmin]:
    return type(base.__name__, (base,), {"inlines": [PeriodicTaskInline], "__module__": __name__})


for model, model_admin in (
    (PeriodicTask, PeriodicTaskAdmin),
    (ClockedSchedule, _with_inline(beat_admin.ClockedScheduleAdmin)),
    (CrontabSchedule, _with_inline(beat_admin.CrontabScheduleAdmin)),
    (SolarSchedule, _with_inline(beat_admin.SolarScheduleAdmin)),
    (IntervalSchedule, _with_inline(beat_admin.IntervalScheduleAdmin)),
):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
