"""周期任务登记处：各 app 在代码里声明自己的周期任务，setup_periodic_tasks 把它们同步进 django-celery-beat。

这样后续功能只需 `register(...)`，无需手工在后台配置 beat。
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PeriodicTaskSpec:
    name: str  # 唯一名称，也是 django-celery-beat 里 PeriodicTask.name
    task: str  # Celery 任务全名
    every_seconds: int | None = None
    crontab: str | None = None  # "分 时 日 月 周"，如 "0 3 * * *"
    kwargs: dict = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, PeriodicTaskSpec] = {}


def register(spec: PeriodicTaskSpec) -> PeriodicTaskSpec:
    if spec.every_seconds is None and spec.crontab is None:
        raise ValueError(f"周期任务 {spec.name} 需要 every_seconds 或 crontab")
    _REGISTRY[spec.name] = spec
    return spec


def registered() -> list[PeriodicTaskSpec]:
    return sorted(_REGISTRY.values(), key=lambda s: s.name)
