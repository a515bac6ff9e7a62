// Jenkins 共享库步骤：telegramApproval —— 向发布审批服务申请审批，等到结果；被拒绝/超时则让构建失败。
//
// 用法（Jenkinsfile）：
//   @Library('approval') _
//   telegramApproval(environment: 'production', version: env.GIT_COMMIT.take(8),
//                    description: '修复支付回调', mode: 'input')   // mode: input | webhook | poll
//
// 需要：
//   - 把 docs/jenkins 注册为 Global Pipeline Library，名字 approval（Manage Jenkins → System → Global Pipeline Libraries）
//   - 全局环境变量 APPROVAL_URL（如 https://approval.example.com），或参数 server:
//   - Jenkins 凭据（Secret text）approval-api-token：make manage ARGS="create_api_token jenkins --scope jenkins --scope read"
//   - mode 'webhook' 需要 Webhook Step 插件；mode 'input' 建议装 Pipeline Stage View（服务用它的 wfapi 找 input）
//   - Linux agent 上有 curl
//   - 本步骤不签名：token 设置了签名密钥时改用 docs/jenkins/sign_request.py（每个请求签名一次，含 nonce）
//
// 执行器：流水线顶层写 agent none 时，本步骤只在发 HTTP 请求的那几秒借用一个执行器（参数 label: 选节点），
// 等待审批（input、waitForWebhook、两次查询之间）不占执行器。写 agent any 时整个等待期间都占着那个执行器。
// 沙箱：发起人从 currentBuild.getBuildCauses 读取（沙箱允许）；不用 currentBuild.rawBuild——那在不受信任的
// 库（文件夹级库）里要管理员做脚本审批。注册成 Global Pipeline Library 的库是受信任的，不受沙箱限制。
import groovy.json.JsonOutput
import groovy.json.JsonSlurperClassic

def call(Map args = [:]) {
    String mode = args.mode ?: 'input'
    String server = (args.server ?: env.APPROVAL_URL ?: '').replaceAll('/+$', '')
    if (!server) { error '缺少审批服务地址：设置全局环境变量 APPROVAL_URL 或传 server:' }
    String credentialsId = args.credentialsId ?: 'approval-api-token'
    // Jenkins 会把 input id 的首字母大写；这里直接用大写开头，服务端也会自动处理
    String inputId = args.inputId ?: 'Release'
    int timeoutMinutes = (args.timeoutMinutes ?: 60) as int
    String label = args.label ?: ''

    Map body = [
        JOB_NAME      : env.JOB_NAME,
        BUILD_NUMBER  : env.BUILD_NUMBER,
        BUILD_URL     : env.BUILD_URL,
        project       : args.project ?: env.JOB_NAME,
        environment   : args.environment ?: env.DEPLOY_ENV ?: '',
        version       : args.version ?: '',
        description   : args.description ?: '',
        operation     : args.operation ?: '部署',
        BUILD_USER_ID : args.requestedBy ?: buildUserId(),
        timeout_minutes: timeoutMinutes,
    ]
    def hook = null
    if (mode == 'input') {
        body.input_id = inputId
    } else if (mode == 'webhook') {
        hook = registerWebhook()
        body.callback_url = hook.url
    }

    Map reply = approvalApi(server, credentialsId, label, 'POST', '/api/stage/approval/wait', body)
    echo "发布审批 ${reply.id}（${reply.environment}，需要 ${reply.required_approvals} 票）：${reply.links.status}"

    if (reply.status != 'pending') {
        // 重复调用（例如重放）时审批可能早已有结果
        return finish(reply)
    }
    if (mode == 'input') {
        // 服务在决定后调用 …/input/Release/proceed（把真实审批人写进 APPROVER）或 …/abort
        timeout(time: timeoutMinutes + 5, unit: 'MINUTES') {
            def approver = input(id: inputId, message: "等待 Telegram 审批 ${reply.id}", ok: '同意发布',
                                 parameters: [string(name: 'APPROVER', defaultValue: '', description: '由审批服务填写')])
            echo "已由 ${approver ?: '审批服务'} 同意"
        }
        return reply
    }
    if (mode == 'webhook') {
        timeout(time: timeoutMinutes + 5, unit: 'MINUTES') {
            String data = waitForWebhook(hook)
            Map decision = parseJson(data)
            if (!decision.approved) {
                error "发布未获批准：${decision.status}（${decision.decided_by ?: '系统'}）${decision.reason ?: ''}"
            }
            echo "已由 ${decision.decided_by} 同意"
        }
        return reply
    }
    // poll：在执行器里时每次最多挂 55 秒（审批一有结果立刻返回）；不在执行器里时立即返回，两次之间在执行器外等 15 秒
    boolean holding = env.NODE_NAME as boolean
    timeout(time: timeoutMinutes + 5, unit: 'MINUTES') {
        while (reply.status == 'pending') {
            if (!holding) { sleep(time: 15, unit: 'SECONDS') }
            reply = approvalApi(server, credentialsId, label, 'GET',
                                "/api/stage/approval/wait?id=${reply.id}&wait=${holding ? 55 : 0}", null)
        }
    }
    return finish(reply)
}

private Map finish(Map reply) {
    if (!reply.proceed) {
        error "发布未获批准：${reply.status}（${reply.decided_by ?: '系统'}）${reply.reason ?: ''}"
    }
    echo "已由 ${reply.decided_by} 同意"
    return reply
}

// 已在执行器里（agent any、node 块内）就地运行；否则只为这一次请求借用一个执行器
private def onAgent(String label, Closure body) {
    if (env.NODE_NAME) {
        return body()
    }
    def result = null
    node(label) {
        result = body()
    }
    return result
}

private Map approvalApi(String server, String credentialsId, String label, String method, String path, Map body) {
    String out = onAgent(label) {
        withCredentials([string(credentialsId: credentialsId, variable: 'APPROVAL_TOKEN')]) {
            if (body != null) {
                writeFile file: '.approval-request.json', text: JsonOutput.toJson(body), encoding: 'UTF-8'
            }
            // 单引号：token 由 shell 展开，不进 Groovy 字符串，也不会出现在日志里
            String data = body != null ? "--data-binary @.approval-request.json -H 'Content-Type: application/json; charset=utf-8'" : ''
            return sh(returnStdout: true, script: """
                curl -sS --retry 5 --retry-all-errors --max-time 90 -X ${method} ${data} \\
                     -H "Authorization: Bearer \$APPROVAL_TOKEN" '${server}${path}'
            """).trim()
        }
    }
    Map reply = parseJson(out)
    if (reply.error) {
        error "审批服务返回错误 ${reply.error.code}：${reply.error.message}"
    }
    return reply
}

@NonCPS
private Map parseJson(String text) {
    return new JsonSlurperClassic().parseText(text) as Map
}

// 谁点了“构建”：getBuildCauses 在沙箱里可用，不像 currentBuild.rawBuild 需要脚本审批
private String buildUserId() {
    def causes = currentBuild.getBuildCauses('hudson.model.Cause$UserIdCause')
    return causes ? (causes[0].userId ?: '') : ''
}
