"""发往群里的通知，一种一个模块：审批消息（approvals）、提醒摘要（reminders）、超时（timeouts）、
构建结果（build_results）、配置变化（config）。它们都经过发件箱（telegram_bot.outbox），任务在 telegram_bot.tasks。
谁该被点名由 approvals.eligibility 回答。"""
