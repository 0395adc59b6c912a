import pytest
from multidict import MultiDict, MultiDictProxy

from gateway.domain.models import Channel, DeliveryState, Media
from gateway.errors import BadRequest
from gateway.twilio.data import parse_inbound, parse_status, to_address

PHONE = "+14155550123"
OUR_NUMBER = "+12025550123"
SID = "SM" + "a" * 32
ACCOUNT = "AC" + "b" * 32


def inbound_form(**fields: str) -> MultiDictProxy[str]:
    base = {
        "MessageSid": SID, "SmsMessageSid": SID, "AccountSid": ACCOUNT,
        "From": PHONE, "To": OUR_NUMBER, "Body": "hello", "NumMedia": "0",
        "SmsStatus": "received", "ApiVersion": "2010-04-01",
    }
    base.update(fields)
    return MultiDictProxy(MultiDict({k: v for k, v in base.items() if v is not None}))


class TestInboundSms:
    def test_a_plain_sms_is_parsed_into_an_inbound_text(self) -> None:
        text = parse_inbound(inbound_form())
        assert text.message_sid == SID
        assert text.account_sid == ACCOUNT
        assert text.from_ == PHONE
        assert text.to == OUR_NUMBER
        assert text.channel is Channel.SMS
        assert text.body == "hello"
        assert text.media == ()

    def test_numbers_are_normalised_to_e164(self) -> None:
        text = parse_inbound(inbound_form(From="+1 (415) 555-0123"))
        assert text.from_ == PHONE

    def test_a_media_only_message_has_an_empty_body(self) -> None:
        form = MultiDict(inbound_form())
        del form["Body"]
        form.update({"NumMedia": "2",
                     "MediaUrl0": "https://api.twilio.com/m/ME1", "MediaContentType0": "image/png",
                     "MediaUrl1": "https://api.twilio.com/m/ME2"})
        text = parse_inbound(form)
        assert text.body == ""
        assert text.media == (Media("https://api.twilio.com/m/ME1", "image/png"),
                              Media("https://api.twilio.com/m/ME2", None))

    def test_the_sms_sid_stands_in_for_a_missing_message_sid(self) -> None:
        form = MultiDict(inbound_form())
        del form["MessageSid"]
        assert parse_inbound(form).message_sid == SID


class TestInboundWhatsApp:
    def test_the_whatsapp_prefix_sets_the_channel_and_is_stripped(self) -> None:
        text = parse_inbound(inbound_form(From="whatsapp:" + PHONE, To="whatsapp:" + OUR_NUMBER))
        assert text.channel is Channel.WHATSAPP
        assert text.from_ == PHONE
        assert text.to == OUR_NUMBER

    def test_a_prefix_on_one_side_only_is_refused(self) -> None:
        with pytest.raises(BadRequest, match="different channels"):
            parse_inbound(inbound_form(From="whatsapp:" + PHONE))

    def test_to_address_adds_the_prefix_back_for_whatsapp_only(self) -> None:
        assert to_address(PHONE, Channel.WHATSAPP) == "whatsapp:" + PHONE  # type: ignore[arg-type]
        assert to_address(PHONE, Channel.SMS) == PHONE  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="not a phone channel"):
            to_address(PHONE, Channel.XMTP)  # type: ignore[arg-type]


class TestInvalidInbound:
    @pytest.mark.parametrize(("fields", "reason"), [
        ({"From": None}, "missing From"),
        ({"To": ""}, "missing To"),
        ({"From": "4155550123"}, "From: not an E.164 number"),
        ({"To": "+1555"}, "^To: "),
        ({"From": "+1415555O123"}, "From: not an E.164 number"),
        ({"MessageSid": None, "SmsMessageSid": None}, "missing MessageSid"),
        ({"MessageSid": "SM<script>"}, "MessageSid is not a Twilio sid"),
        ({"AccountSid": None}, "missing AccountSid"),
        ({"NumMedia": "two"}, "NumMedia is not a number"),
        ({"NumMedia": "11"}, "above Twilio's limit"),
        ({"NumMedia": "1"}, "MediaUrl0 missing"),
        ({"NumMedia": "1", "MediaUrl0": "file:///etc/passwd"}, "not an http"),
    ])
    def test_a_bad_field_is_a_bad_request_naming_it(
        self, fields: dict[str, str | None], reason: str,
    ) -> None:
        base = dict(inbound_form())
        for key, value in fields.items():
            if value is None:
                base.pop(key, None)
            else:
                base[key] = value
        with pytest.raises(BadRequest, match=reason):
            parse_inbound(base)

    def test_the_reason_does_not_reveal_the_whole_number(self) -> None:
        with pytest.raises(BadRequest) as info:
            parse_inbound(inbound_form(From="+1555010012"))
        assert "1555010012" not in str(info.value)


def status_form(**fields: str) -> dict[str, str]:
    base = {"MessageSid": SID, "SmsSid": SID, "AccountSid": ACCOUNT, "From": OUR_NUMBER,
            "To": PHONE, "MessageStatus": "delivered", "SmsStatus": "delivered",
            "ApiVersion": "2010-04-01"}
    base.update(fields)
    return base


class TestStatusCallback:
    @pytest.mark.parametrize(("twilio", "ours"), [
        ("queued", DeliveryState.SENT),
        ("accepted", DeliveryState.SENT),
        ("sending", DeliveryState.SENT),
        ("sent", DeliveryState.SENT),
        ("delivered", DeliveryState.DELIVERED),
        ("read", DeliveryState.READ),
        ("undelivered", DeliveryState.UNDELIVERED),
        ("failed", DeliveryState.FAILED),
        ("canceled", DeliveryState.FAILED),
    ])
    def test_twilio_statuses_map_onto_delivery_states(
        self, twilio: str, ours: DeliveryState,
    ) -> None:
        update = parse_status(status_form(MessageStatus=twilio, SmsStatus=twilio))
        assert update.state is ours
        assert update.message_sid == SID
        assert update.account_sid == ACCOUNT

    def test_a_failure_keeps_its_error_code_and_message(self) -> None:
        update = parse_status(status_form(MessageStatus="undelivered", ErrorCode="30003",
                                          ErrorMessage="Unreachable destination handset"))
        assert update.error_code == 30003
        assert update.error_message == "Unreachable destination handset"

    def test_a_known_code_without_a_message_is_described(self) -> None:
        update = parse_status(status_form(MessageStatus="failed", ErrorCode="63016"))
        assert update.error_message is not None and "24-hour window" in update.error_message
        unknown = parse_status(status_form(MessageStatus="failed", ErrorCode="12345"))
        assert (unknown.error_code, unknown.error_message) == (12345, None)

    def test_no_error_code_is_none(self) -> None:
        update = parse_status(status_form(ErrorCode=""))
        assert update.error_code is None
        assert update.error_message is None

    @pytest.mark.parametrize(("fields", "reason"), [
        ({"MessageStatus": "", "SmsStatus": ""}, "missing MessageStatus"),
        ({"MessageStatus": "received"}, "not an outbound message status"),
        ({"MessageStatus": "bogus"}, "not an outbound message status"),
        ({"ErrorCode": "30x"}, "ErrorCode is not a number"),
        ({"MessageSid": "", "SmsSid": ""}, "missing MessageSid"),
    ])
    def test_a_bad_callback_is_a_bad_request(self, fields: dict[str, str], reason: str) -> None:
        with pytest.raises(BadRequest, match=reason):
            parse_status(status_form(**fields))


class TestTwilioErrorsInLogs:
    def test_numbers_in_twilios_error_text_are_masked(self) -> None:
        from twilio.base.exceptions import TwilioRestException

        from gateway.twilio.sender import _message

        exc = TwilioRestException(400, "https://api.twilio.com/x", code=21211,
                                  msg="The 'To' number +15551230001 is not a valid phone number.")
        text = _message(exc)
        assert "+15551230001" not in text
        assert "+1******0001" in text
        assert "is not a valid phone number" in text
