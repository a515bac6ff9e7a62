"""运维（DESIGN：health、metrics、告警、备份是一件事）：只读其他 app 的选择器与客户端，其他 app 不依赖这里。"""
