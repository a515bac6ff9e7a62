#!/usr/bin/env bash
# 镜像的入口（在仓库检出里同样可用：路径都相对本脚本）。
#   entrypoint.sh web | bot | worker | beat   运行一个进程（exec，信号直达进程本身）
#   entrypoint.sh migrate                     部署步骤：数据库迁移 + 加载配置文件，完成后退出
#   entrypoint.sh manage <命令…>              任意 manage.py 命令，例如 manage create_api_token jenkins
#   entrypoint.sh <其他命令…>                 原样执行（例如 bash）
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# 镜像与仓库检出都把虚拟环境放在 <项目>/.venv
if [ -x "$ROOT/.venv/bin/python" ]; then
  export PATH="$ROOT/.venv/bin:$PATH"
fi

role=${1:-web}
[ $# -eq 0 ] || shift
case "$role" in
  web|bot|worker|beat)
    # 进程角色：决定 LOG_FILE 的文件名（app-web.log…），同一个文件不会被两种进程轮转
    export APP_PROCESS=$role
    ;;
esac

case "$role" in
  web)
    # gunicorn 管理多个 uvicorn worker（长轮询与 webhook 需要事件循环）；SIGTERM 后给进行中的请求 30 秒
    exec gunicorn approvalbot.asgi:application -k uvicorn.workers.UvicornWorker \
      --bind "${WEB_HOST:-127.0.0.1}:${WEB_PORT:-8000}" --workers "${WEB_CONCURRENCY:-3}" \
      --graceful-timeout 30 --timeout 90 --no-control-socket "$@"
    ;;
  worker)
    exec celery -A approvalbot worker --loglevel=INFO --concurrency="${WORKER_CONCURRENCY:-2}" "$@"
    ;;
  beat)
    # 不加 -S：settings 的 CELERY_BEAT_SCHEDULER 在启动时装入周期任务表
    exec celery -A approvalbot beat --loglevel=INFO "$@"
    ;;
  bot)
    # 没有 token 或 webhook 模式时说明原因并空转，不会被 restart 策略反复重启
    exec "$ROOT/bin/run-bot"
    ;;
  migrate)
    python manage.py migrate --noinput
    exec python manage.py load_config
    ;;
  manage)
    exec python manage.py "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
