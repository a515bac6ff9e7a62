"""投递状态搬进 telegram_bot 的发件箱之后（telegram_bot 0002 已转换）：删掉 BuildResult 上的投递记录；
BuildLog.archived 从来没被用过（归档后即删除）。"""

from django.db import migrations

DELIVERY_KEYS = ("notice", "notify_error", "notice_attempt")


def strip_delivery_keys(apps, schema_editor):
    BuildResult = apps.get_model("approvals", "BuildResult")
    for result in BuildResult.objects.exclude(details={}).iterator():
        details = {k: v for k, v in (result.details or {}).items() if k not in DELIVERY_KEYS}
        if details != result.details:
            BuildResult.objects.filter(pk=result.pk).update(details=details)


class Migration(migrations.Migration):

    dependencies = [
        ("approvals", "0003_build_key_generation_and_retention_indexes"),
    ]

    operations = [
        migrations.RunPython(strip_delivery_keys, migrations.RunPython.noop),
        migrations.RemoveField(model_name="buildresult", name="notified_at"),
        migrations.RemoveField(model_name="buildlog", name="archived"),
    ]
