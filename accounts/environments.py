"""环境名归一化：Jenkins 里人们写 生产/prod/prd/PRODUCTION……，规则与展示只认一种写法。"""

from __future__ import annotations

PRODUCTION = "production"
STAGING = "staging"
TEST = "test"
DEVELOPMENT = "development"

_ALIASES: dict[str, str] = {}
for _canonical, _names in {
    PRODUCTION: ["production", "prod", "prd", "pro", "live", "生产", "生产环境", "线上", "正式", "正式环境"],
    STAGING: ["staging", "stage", "stg", "pre", "preprod", "pre-prod", "uat", "预发", "预发布", "预发环境", "灰度"],
    TEST: ["test", "testing", "qa", "sit", "测试", "测试环境"],
    DEVELOPMENT: ["development", "dev", "develop", "开发", "开发环境"],
}.items():
    for _name in _names:
        _ALIASES[_name] = _canonical


def normalize_environment(raw: str | None) -> str:
    """返回归一化环境名；未知环境保留为小写原值（仍然可以写专门的规则）。"""
    value = (raw or "").strip().lower()
    if not value:
        return ""
    return _ALIASES.get(value, value)


def is_production(environment: str) -> bool:
    return normalize_environment(environment) == PRODUCTION
