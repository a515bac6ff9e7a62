"""伪造的 callback_data（漏洞 5）：翻页按钮的数据绑定在机器人发出的那条待办列表消息上；
审批消息只会被渲染成审批消息——谁都不能把它改成自己的 /pending 页、把按钮弄没。"""

from __future__ import annotations

import pytest

from telegram_bot.models import MessageKind, TelegramMessage
from tests.telegram_bot.conftest import GROUP_ID

pytestmark = pytest.mark.django_db(transaction=True)


def approval_message(fake, approval):
    row = TelegramMessage.objects.get(approval=approval, kind=MessageKind.APPROVAL)
    return fake.message(GROUP_ID, row.message_id)


@pytest.mark.parametrize("who", ["outsider", "stranger"])
def test_a_forged_page_button_on_an_approval_message_changes_nothing(bot, fake_tg, tg_users, shop_rule,
                                                                      make_approval, who):
    approval = make_approval()
    before = approval_message(fake_tg, approval)
    text, buttons = before.text, before.buttons
    user = tg_users[who]

    async def scenario(h):
        answer = await h.tap(user, GROUP_ID, before.message["message_id"], f"pd:1:{user['id']}")
        assert answer["show_alert"] is True and "按钮已失效" in answer["text"]

    bot.run(scenario)
    after = approval_message(fake_tg, approval)
    assert (after.text, after.buttons) == (text, buttons)
    assert [c for c in fake_tg.calls_to("editMessageText")
            if c.params.get("message_id") == before.message["message_id"]] == []


def test_a_page_button_replayed_onto_someone_elses_list_is_refused(bot, fake_tg, tg_users, shop_rule, make_approval):
    for n in range(7):
        make_approval(job_name=f"folder/shop-{n}")

    async def scenario(h):
        bobs = await h.say(tg_users["approver"], GROUP_ID, "/pending")
        alices = await h.say(tg_users["admin"], GROUP_ID, "/pending")
        # 把 bob 自己列表上的翻页数据（pd:2:<bob>）拿去点 alice 的列表：列表不是他的
        answer = await h.tap(tg_users["approver"], GROUP_ID, alices.message["message_id"], "pd:2:1002")
        assert answer["show_alert"] is True
        assert "共" in fake_tg.message(GROUP_ID, alices.message["message_id"]).text
        assert fake_tg.message(GROUP_ID, alices.message["message_id"]).history == []
        # 他自己的列表照常翻页
        answer = await h.tap(tg_users["approver"], GROUP_ID, bobs.message["message_id"], "pd:2:1002")
        assert answer == {"text": None, "show_alert": False}

    bot.run(scenario)
