"""The store's prebuilt statements run inline on SQLite through ``gateway.store.prepared``,
which leans on SQLAlchemy internals (a compilation's bind and result processors). Here the
store runs a whole bridge workload with every prepared run checked against the same
statement run through plain SQLAlchemy (in a savepoint rolled back after it): a
SQLAlchemy upgrade that changes those internals fails this test, not production."""

from __future__ import annotations

from pathlib import Path

from gateway.domain.models import Channel, DeliveryState
from gateway.errors import RetryableSendError, UnknownOutcomeError
from gateway.store import open_store, statements
from tests.delivery.world import KEYS, OTHER_PHONE, World


async def test_every_prepared_statement_answers_as_sqlalchemy_does(tmp_path: Path) -> None:
    store = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", keys=KEYS,
                             active_key="k1", verify_prepared=True)
    w = World(store)
    try:
        process = await w.start()
        await w.phone_says("hi")
        await w.phone_says("hi from another", phone=OTHER_PHONE)
        await w.settled()
        w.phone.script = [RetryableSendError("busy", provider_code=20429),
                          UnknownOutcomeError("timed out")]
        for n in range(3):
            await w.wallet_says(f"reply {n}")
        await w.settled()
        for sent in await w.deliveries(Channel.SMS):
            if sent.provider_id:
                await w.relay.phone_status(sent.provider_id, DeliveryState.DELIVERED,
                                           error_code=None, error_message=None)
        await w.phone_says("STOP")
        await w.wallet_says("while stopped")
        await w.phone_says("START")
        await w.settled()
        await w.kill()
        await w.start(process.holder.id)
        await w.settled()
    finally:
        await w.stop()
        prepared = store.prepared
        await store.close()
    assert prepared is not None
    hot = {statements.ADD_DELIVERY, statements.MARK_SENT_LEASED,
           statements.UPDATE_LEASED_DELIVERY, statements.LANE_WAIT,
           statements.GET_CONVERSATION, statements.GET_PARTICIPANT,
           statements.CURRENT_PARTICIPANTS, statements.ALL_PARTICIPANTS,
           statements.PHONE_PARTICIPANT, statements.FIND_MESSAGE, statements.GET_MESSAGE,
           statements.MESSAGE_DELIVERIES, statements.PROVIDER_DELIVERIES,
           statements.TAKE_MESSAGE_INDEX, statements.GET_CONTACT, statements.ADD_EVENT,
           statements.RELEASE_HELD, statements.TAKE_EARLY_STATUS,
           *(getattr(statements.UPSERTS["sqlite"], name) for name in
             ("add_message", "add_participant", "add_conversation", "record_inbound",
              "set_contact_consent"))}
    names = {id(value): name for name, value in vars(statements).items()}
    names |= {id(getattr(statements.UPSERTS["sqlite"], n)): n
              for n in statements.UPSERTS["sqlite"].__dataclass_fields__}
    assert hot <= prepared.verified, sorted(names[id(s)] for s in hot - prepared.verified)
