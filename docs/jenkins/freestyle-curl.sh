#!/bin/sh
# Freestyle 任务（或任何脚本）用 curl 申请审批并轮询结果。Jenkins 会自动提供 JOB_NAME、BUILD_NUMBER、BUILD_URL。
# 需要：APPROVAL_URL、APPROVAL_TOKEN（jenkins 权限范围的 token，建议用凭据绑定注入）。
# token 设置了签名密钥时，每个请求都要签名（方法、路径、查询串、请求体、nonce）：见同目录的 sign_request.py。
set -eu
: "${APPROVAL_URL:?}" "${APPROVAL_TOKEN:?}"
AUTH="Authorization: Bearer $APPROVAL_TOKEN"

# 1) 申请：表单字段，Jenkins 的变量名原样可用；中文说明直接写
reply=$(curl -sS -X POST "$APPROVAL_URL/api/stage/approval/wait" -H "$AUTH" \
  --data-urlencode "JOB_NAME=$JOB_NAME" --data-urlencode "BUILD_NUMBER=$BUILD_NUMBER" \
  --data-urlencode "BUILD_URL=${BUILD_URL:-}" --data-urlencode "env=生产" \
  --data-urlencode "version=${VERSION:-}" --data-urlencode "description=${DESCRIPTION:-常规发布}" \
  --data-urlencode "operation=部署")
id=$(printf '%s' "$reply" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "审批编号 $id，请在 Telegram 里处理"

# 2) 轮询：每次最多等 55 秒，有结果立即返回
while :; do
  reply=$(curl -sS --max-time 70 -G "$APPROVAL_URL/api/stage/approval/wait" -H "$AUTH" \
    --data-urlencode "id=$id" --data-urlencode "wait=55")
  status=$(printf '%s' "$reply" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  [ "$status" != "pending" ] && break
done
echo "$reply"
[ "$status" = "approved" ] || { echo "发布未获批准：$status"; exit 1; }
