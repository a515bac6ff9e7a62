"""决定路径的打点（基准用，默认关闭）：APPROVALBOT_TRACE=1 时各进程在关键步骤写一行
"trace <步骤> <键> <unix 秒>"（logger approvalbot.trace，INFO），bench/decision_latency.py 据此拆分延迟。

关闭时每个调用只是一次布尔判断。键是审批编号（或 pk:<id>），步骤名见调用处。
"""

from __future__ import annotations

import logging
import os
import time

logger = logging.getLogger("approvalbot.trace")
ENABLED = os.environ.get("APPROVALBOT_TRACE", "") == "1"


def trace(stage: str, key: object) -> None:
    if ENABLED:
        logger.info("trace %s %s %.6f", stage, key, time.time())
