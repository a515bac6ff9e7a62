"""Jenkins 与脚本调用的 DRF API（/api/…）以及 /health、/metrics。"""
