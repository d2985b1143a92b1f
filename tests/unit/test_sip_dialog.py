"""RFC 3261 §12 dialogs: creation from captured peers' messages, in-dialog requests, routing, CSeq rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.sip.dialog import Dialog, DialogId, DialogState, incoming_dialog_id
from gateway.sip.errors import LocalProtocolError, RemoteProtocolError
from gateway.sip.headers import CSeq, Headers, NameAddr, Via, parse_name_addr
from gateway.sip.message import Request, Response, make_response
from gateway.sip.parser import parse_message

CAPTURED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "sip" / "captured"

OUR_CONTACT = parse_name_addr("<sip:gw@192.0.2.10:5060>")


def via(branch: str) -> Via:
    return Via(host="192.0.2.10", port=5060, params={"branch": f"z9hG4bK{branch}"})


def load(name: str) -> Request | Response:
    return parse_message((CAPTURED / name).read_bytes())


def request_from(text: str) -> Request:
    message = parse_message(text.replace("\n", "\r\n").encode())
    assert isinstance(message, Request)
    return message


def wire(message: Request | Response) -> Request | Response:
    """What the far end sees: serialise and parse again."""
    return parse_message(message.serialize())


def wire_response(response: Response) -> Response:
    again = wire(response)
    assert isinstance(again, Response)
    return again


def wire_request(request: Request) -> Request:
    again = wire(request)
    assert isinstance(again, Request)
    return again


def our_invite_for(ok: Response, contact: str = "<sip:bar@127.0.0.1:5070>") -> Request:
    """The INVITE we must have sent to get the captured 200 OK (same Call-ID, From, CSeq)."""
    to = ok.to
    to.params.pop("tag", None)
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1"),
            ("Max-Forwards", "70"),
            ("From", ok.headers.get("From") or ""),
            ("To", str(to)),
            ("Call-ID", ok.call_id),
            ("CSeq", str(ok.cseq)),
            ("Contact", contact),
        ]
    )
    return Request(method="INVITE", uri=to.uri.copy(), headers=headers)


# ----------------------------------------------------------------------------- captured peers, UAS


@pytest.mark.parametrize(
    ("capture", "remote_target"),
    [
        ("invite-sipp-3.6-uac.dat", "sip:sipp@127.0.0.1:5598"),
        ("invite-pjsip-2.15.dat", "sip:pjcall@127.0.0.1:41941;ob"),
        ("invite-baresip-1.0.dat", "sip:tester-0x559f13a8a500@127.0.0.1:5593"),
    ],
)
def test_uas_dialog_from_captured_invite(capture: str, remote_target: str) -> None:
    invite = load(capture)
    assert isinstance(invite, Request)
    ok = make_response(invite, 200, to_tag="gw-tag", headers=[("Contact", str(OUR_CONTACT))])
    dialog = Dialog.create_uas(invite, ok, local_contact=OUR_CONTACT)

    remote_tag = invite.from_.tag
    assert remote_tag
    assert dialog.id == DialogId(invite.call_id, "gw-tag", remote_tag)
    assert dialog.state is DialogState.CONFIRMED
    assert str(dialog.remote_target) == remote_target
    assert dialog.route_set == []
    assert (dialog.local_seq, dialog.remote_seq) == (None, invite.cseq.seq)
    assert str(dialog.local_uri) == str(invite.to.uri)
    assert str(dialog.remote_uri) == str(invite.from_.uri)
    assert not dialog.secure
    assert str(dialog.next_hop()) == remote_target

    bye = dialog.new_request("BYE", via=via("bye1"))
    assert bye.method == "BYE"
    assert str(bye.uri) == remote_target
    assert bye.cseq == CSeq(1, "BYE")
    assert bye.call_id == invite.call_id
    assert bye.from_.tag == "gw-tag"
    assert bye.to.tag == remote_tag
    assert str(bye.to.uri) == str(invite.from_.uri)
    assert bye.max_forwards == 70
    assert "Route" not in bye.headers
    assert "Contact" not in bye.headers  # BYE is not a target refresh
    assert bye.top_via.branch == "z9hG4bKbye1"

    # the far end, holding the matching UAC dialog, accepts our BYE
    peer = Dialog.create_uac(invite, wire_response(ok))
    received = wire(bye)
    assert isinstance(received, Request)
    assert incoming_dialog_id(received) == peer.id
    peer.receive_request(received)
    assert peer.state is DialogState.TERMINATED


@pytest.mark.parametrize(
    ("capture", "remote_target"),
    [
        ("ok200-sipp-3.6-uas.dat", "sip:127.0.0.1:5601;transport=UDP"),
        ("ok200-pjsip-2.15.dat", "sip:pjcall@127.0.0.1:5602"),
        ("ok200-baresip-1.0.dat", "sip:tester-0x55d0f08aa500@127.0.0.1:5604"),
    ],
)
def test_uac_dialog_from_captured_200(capture: str, remote_target: str) -> None:
    ok = load(capture)
    assert isinstance(ok, Response)
    invite = our_invite_for(ok)
    dialog = Dialog.create_uac(invite, ok)

    assert dialog.id == DialogId(ok.call_id, ok.from_.tag or "", ok.to.tag or "")
    assert incoming_dialog_id(ok) == dialog.id
    assert dialog.state is DialogState.CONFIRMED
    assert str(dialog.remote_target) == remote_target
    assert (dialog.local_seq, dialog.remote_seq) == (1, None)
    assert str(dialog.local_contact) == "<sip:bar@127.0.0.1:5070>"

    ack = dialog.ack_for_2xx(invite, ok, via=via("ack1"))
    assert ack.cseq == CSeq(1, "ACK")
    assert str(ack.uri) == remote_target
    assert ack.to.tag == ok.to.tag
    assert dialog.local_seq == 1  # the ACK does not consume a sequence number

    bye = dialog.new_request("BYE", via=via("bye1"))
    assert bye.cseq == CSeq(2, "BYE")
    assert str(bye.uri) == remote_target
    assert wire(bye).cseq == CSeq(2, "BYE")


# ----------------------------------------------------------------------------- route sets

RR_INVITE = """\
INVITE sip:100@gw.example.com SIP/2.0
Via: SIP/2.0/UDP p2.example.com;branch=z9hG4bKp2
Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1
Via: SIP/2.0/UDP caller.example.com:5070;branch=z9hG4bKc
Record-Route: <sip:p2.example.com;lr>
Record-Route: <sip:p1.example.com;lr;transport=tcp>;x-rr=1
From: "Caller" <sip:caller@example.com>;tag=c1
To: <sip:100@gw.example.com>
Call-ID: rr-1@caller
CSeq: 10 INVITE
Contact: <sip:caller@caller.example.com:5070>
Max-Forwards: 68
Content-Length: 0

"""


def rr_dialogs() -> tuple[Request, Response, Dialog, Dialog]:
    invite = request_from(RR_INVITE)
    ok = make_response(invite, 200, to_tag="g1", headers=[("Contact", str(OUR_CONTACT))])
    ours = Dialog.create_uas(invite, ok, local_contact=OUR_CONTACT)
    caller_ok = wire(ok)
    assert isinstance(caller_ok, Response)
    theirs = Dialog.create_uac(invite, caller_ok)
    return invite, ok, ours, theirs


def test_route_set_kept_in_order_for_uas_and_reversed_for_uac() -> None:
    _, ok, ours, theirs = rr_dialogs()
    assert ok.headers.get_all("Record-Route") == [
        "<sip:p2.example.com;lr>",
        "<sip:p1.example.com;lr;transport=tcp>;x-rr=1",
    ]
    assert [str(r) for r in ours.route_set] == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr;transport=tcp>;x-rr=1"]
    assert [str(r) for r in theirs.route_set] == ["<sip:p1.example.com;lr;transport=tcp>;x-rr=1", "<sip:p2.example.com;lr>"]


def test_loose_routing_keeps_remote_target_in_request_uri() -> None:
    _, _, ours, theirs = rr_dialogs()
    bye = ours.new_request("BYE", via=via("b"))
    assert str(bye.uri) == "sip:caller@caller.example.com:5070"
    assert [str(r) for r in bye.routes] == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr;transport=tcp>;x-rr=1"]
    assert str(ours.next_hop()) == "sip:p2.example.com;lr"

    info = theirs.new_request("INFO", via=via("i"))
    assert str(info.uri) == "sip:gw@192.0.2.10:5060"
    assert [str(r.uri) for r in info.routes] == ["sip:p1.example.com;lr;transport=tcp", "sip:p2.example.com;lr"]
    assert str(theirs.next_hop()) == "sip:p1.example.com;lr;transport=tcp"
    assert info.cseq == CSeq(11, "INFO")


STRICT_INVITE = RR_INVITE.replace(
    "Record-Route: <sip:p2.example.com;lr>\n", "Record-Route: <sip:strict.example.com;method=INVITE?X=y>\n"
)


def test_strict_router_goes_into_request_uri_and_target_last_in_route() -> None:
    invite = request_from(STRICT_INVITE)
    ok = make_response(invite, 200, to_tag="g1", headers=[("Contact", str(OUR_CONTACT))])
    dialog = Dialog.create_uas(invite, ok, local_contact=OUR_CONTACT)
    bye = dialog.new_request("BYE", via=via("s"))
    # "stripping any parameters that are not allowed in a Request-URI"
    assert str(bye.uri) == "sip:strict.example.com"
    assert [str(r) for r in bye.routes] == [
        "<sip:p1.example.com;lr;transport=tcp>;x-rr=1",
        "<sip:caller@caller.example.com:5070>",
    ]
    assert str(dialog.next_hop()) == "sip:strict.example.com;method=INVITE?X=y"
    assert isinstance(wire(bye), Request)


# ----------------------------------------------------------------------------- building requests


def test_cseq_increments_and_target_refresh_requests_carry_contact() -> None:
    _, _, ours, _ = rr_dialogs()
    methods = ["INFO", "INVITE", "UPDATE", "OPTIONS", "REFER", "NOTIFY", "BYE"]
    requests = [ours.new_request(m, via=via(str(i))) for i, m in enumerate(methods)]
    assert [r.cseq.seq for r in requests] == list(range(1, len(methods) + 1))
    with_contact = [r.method for r in requests if "Contact" in r.headers]
    assert with_contact == ["INVITE", "UPDATE", "REFER", "NOTIFY"]
    assert all(str(r.contacts[0]) == str(OUR_CONTACT) for r in requests if r.method in with_contact)
    assert ours.local_seq == len(methods)


def test_initial_local_sequence_number_can_be_chosen() -> None:
    invite = request_from(RR_INVITE)
    ok = make_response(invite, 200, to_tag="g1")
    dialog = Dialog.create_uas(invite, ok, local_contact=OUR_CONTACT, initial_local_seq=4711)
    assert dialog.new_request("BYE", via=via("b")).cseq == CSeq(4711, "BYE")


def test_new_request_body_and_extra_headers() -> None:
    _, _, ours, _ = rr_dialogs()
    request = ours.new_request(
        "INFO", via=via("x"), headers=[("X-Call", "1")], body=b"Signal=5\r\n", content_type="application/dtmf-relay"
    )
    assert request.headers.get("X-Call") == "1"
    assert request.content_type == "application/dtmf-relay"
    again = wire(request)
    assert again.body == b"Signal=5\r\n"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"headers": [("Route", "<sip:evil>")]},
        {"headers": [("CSeq", "99 INFO")]},
        {"headers": [("t", "<sip:x@y>")]},
        {"body": b"x"},
    ],
)
def test_new_request_refuses_misuse(kwargs: dict[str, object]) -> None:
    _, _, ours, _ = rr_dialogs()
    with pytest.raises(LocalProtocolError):
        ours.new_request("INFO", via=via("x"), **kwargs)  # type: ignore[arg-type]
    assert ours.local_seq is None  # nothing consumed


@pytest.mark.parametrize("method", ["ACK", "CANCEL", "ack"])
def test_ack_and_cancel_are_not_built_by_new_request(method: str) -> None:
    _, _, ours, _ = rr_dialogs()
    with pytest.raises(LocalProtocolError):
        ours.new_request(method, via=via("x"))


def test_ack_for_2xx_copies_credentials_and_uses_dialog_route() -> None:
    invite = request_from(RR_INVITE)
    invite.headers.add("Proxy-Authorization", 'Digest username="c", realm="r", nonce="n", uri="sip:x", response="0"')
    ok = make_response(invite, 200, to_tag="g1", headers=[("Contact", str(OUR_CONTACT))])
    caller_ok = wire(ok)
    assert isinstance(caller_ok, Response)
    caller = Dialog.create_uac(invite, caller_ok)
    ack = caller.ack_for_2xx(invite, caller_ok, via=via("a"), body=b"v=0\r\n", content_type="application/sdp")
    assert ack.method == "ACK"
    assert ack.cseq == CSeq(10, "ACK")
    assert ack.headers.get("Proxy-Authorization") == invite.headers.get("Proxy-Authorization")
    assert [str(r.uri) for r in ack.routes] == ["sip:p1.example.com;lr;transport=tcp", "sip:p2.example.com;lr"]
    assert str(ack.uri) == "sip:gw@192.0.2.10:5060"
    assert ack.content_type == "application/sdp"
    assert "Contact" not in ack.headers
    with pytest.raises(LocalProtocolError):
        caller.ack_for_2xx(invite, make_response(invite, 486), via=via("a"))


# ----------------------------------------------------------------------------- receiving requests


def test_out_of_order_cseq_gets_500_with_retry_after() -> None:
    invite = request_from(RR_INVITE)
    ok = make_response(invite, 200, to_tag="g1", headers=[("Contact", str(OUR_CONTACT))])
    ours = Dialog.create_uas(invite, ok, local_contact=OUR_CONTACT, retry_after=lambda: 7)
    caller_ok = wire(ok)
    assert isinstance(caller_ok, Response)
    theirs = Dialog.create_uac(invite, caller_ok)

    info = theirs.new_request("INFO", via=via("i1"))  # CSeq 11
    ours.receive_request(info)
    assert ours.remote_seq == 11
    stale = theirs.new_request("INFO", via=via("i2"))
    stale.headers.set("CSeq", "9 INFO")
    with pytest.raises(RemoteProtocolError) as info_err:
        ours.receive_request(stale)
    assert info_err.value.status_code == 500
    assert info_err.value.extra_headers == (("Retry-After", "7"),)
    assert ours.remote_seq == 11

    # ACK and CANCEL carry an older CSeq by design
    ack = theirs.ack_for_2xx(invite, caller_ok, via=via("a"))
    ours.receive_request(ack)
    assert ours.remote_seq == 11
    # in order again (gaps are allowed on receipt)
    later = theirs.new_request("INFO", via=via("i3"))
    later.headers.set("CSeq", "20 INFO")
    ours.receive_request(later)
    assert ours.remote_seq == 20


def test_target_refresh_by_reinvite() -> None:
    _, _, ours, theirs = rr_dialogs()
    theirs.local_contact = parse_name_addr("<sip:caller@198.51.100.7:5070;transport=tcp>")
    reinvite = theirs.new_request("INVITE", via=via("r"))
    ours.receive_request(wire_request(reinvite))
    assert str(ours.remote_target) == "sip:caller@198.51.100.7:5070;transport=tcp"
    assert ours.remote_seq == 11
    bye = ours.new_request("BYE", via=via("b"))
    assert str(bye.uri) == "sip:caller@198.51.100.7:5070;transport=tcp"


def test_non_refresh_request_does_not_move_the_target() -> None:
    _, _, ours, theirs = rr_dialogs()
    info = theirs.new_request("INFO", via=via("i"), headers=[("X-Note", "no contact here")])
    info.headers.add("Contact", "<sip:elsewhere@203.0.113.1>")
    ours.receive_request(info)
    assert str(ours.remote_target) == "sip:caller@caller.example.com:5070"


def test_target_refresh_by_2xx_to_our_reinvite() -> None:
    _, _, ours, _ = rr_dialogs()
    reinvite = ours.new_request("INVITE", via=via("r"))
    rejected = make_response(reinvite, 488, headers=[("Contact", "<sip:caller@203.0.113.9>")])
    ours.receive_response(reinvite, rejected)
    assert str(ours.remote_target) == "sip:caller@caller.example.com:5070"

    reinvite = ours.new_request("INVITE", via=via("r2"))
    accepted = make_response(reinvite, 200, headers=[("Contact", "<sip:caller@203.0.113.9>"), ("Record-Route", "<sip:new-proxy;lr>")])
    ours.receive_response(reinvite, accepted)
    assert str(ours.remote_target) == "sip:caller@203.0.113.9"
    # "the route set ... MUST NOT be" changed by in-dialog responses
    assert [str(r.uri) for r in ours.route_set] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr;transport=tcp"]
    assert ours.state is DialogState.CONFIRMED


def test_bye_received_terminates_and_later_requests_get_481() -> None:
    _, _, ours, theirs = rr_dialogs()
    ours.receive_request(theirs.new_request("BYE", via=via("b")))
    assert ours.state is DialogState.TERMINATED
    with pytest.raises(RemoteProtocolError) as err:
        ours.receive_request(theirs.new_request("INFO", via=via("i")))
    assert err.value.status_code == 481
    with pytest.raises(LocalProtocolError):
        ours.new_request("INFO", via=via("x"))


def test_request_for_another_dialog_is_refused() -> None:
    _, _, ours, theirs = rr_dialogs()
    other = theirs.new_request("INFO", via=via("i"))
    other.headers.set("Call-ID", "someone-else")
    with pytest.raises(LocalProtocolError):
        ours.receive_request(other)


def test_incoming_dialog_id_matches_both_sides() -> None:
    _, _, ours, theirs = rr_dialogs()
    assert incoming_dialog_id(theirs.new_request("INFO", via=via("1"))) == ours.id
    request = ours.new_request("INFO", via=via("2"))
    assert incoming_dialog_id(request) == theirs.id
    assert incoming_dialog_id(make_response(request, 200)) == ours.id


# ----------------------------------------------------------------------------- early dialogs


def uac_early() -> tuple[Request, Dialog]:
    ok = load("ok200-pjsip-2.15.dat")
    assert isinstance(ok, Response)
    invite = our_invite_for(ok)
    ringing = make_response(invite, 180, to_tag="fork-a", headers=[("Contact", "<sip:a@192.0.2.50>"), ("Record-Route", "<sip:p1;lr>")])
    dialog = Dialog.create_uac(invite, ringing)
    assert dialog.state is DialogState.EARLY
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p1;lr"]
    return invite, dialog


def test_early_uac_dialog_confirmed_by_2xx_recomputes_route_set() -> None:
    invite, dialog = uac_early()
    ok = make_response(
        invite, 200, to_tag="fork-a", headers=[("Contact", "<sip:a@192.0.2.51>"), ("Record-Route", "<sip:p2;lr>, <sip:p1;lr>")]
    )
    dialog.receive_response(invite, ok)
    assert dialog.state is DialogState.CONFIRMED
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p1;lr", "sip:p2;lr"]
    assert str(dialog.remote_target) == "sip:a@192.0.2.51"


def test_early_uac_dialog_ends_on_failure_and_ignores_provisionals() -> None:
    invite, dialog = uac_early()
    states = []
    for status in (183, 486):
        dialog.receive_response(invite, make_response(invite, status, to_tag="fork-a"))
        states.append(dialog.state)
    assert states == [DialogState.EARLY, DialogState.TERMINATED]


def test_2xx_from_another_fork_is_not_this_dialog() -> None:
    invite, dialog = uac_early()
    other = make_response(invite, 200, to_tag="fork-b", headers=[("Contact", "<sip:b@192.0.2.60>")])
    with pytest.raises(LocalProtocolError):
        dialog.receive_response(invite, other)
    assert dialog.state is DialogState.EARLY
    forked = Dialog.create_uac(invite, other)
    assert forked.id.remote_tag == "fork-b"


def test_provisional_without_to_tag_creates_no_dialog() -> None:
    invite, _ = uac_early()
    with pytest.raises(LocalProtocolError):
        Dialog.create_uac(invite, make_response(invite, 180))
    with pytest.raises(LocalProtocolError):
        Dialog.create_uac(invite, make_response(invite, 100, to_tag="x"))


def test_2xx_without_contact_is_a_remote_error() -> None:
    invite, _ = uac_early()
    with pytest.raises(RemoteProtocolError) as err:
        Dialog.create_uac(invite, make_response(invite, 200, to_tag="x"))
    assert err.value.is_response


@pytest.mark.parametrize(("final", "state"), [(200, DialogState.CONFIRMED), (603, DialogState.TERMINATED)])
def test_early_uas_dialog_follows_our_final_answer(final: int, state: DialogState) -> None:
    invite = request_from(RR_INVITE)
    ringing = make_response(invite, 180, to_tag="g1")
    dialog = Dialog.create_uas(invite, ringing, local_contact=OUR_CONTACT)
    assert dialog.state is DialogState.EARLY
    dialog.send_response(invite, make_response(invite, final, to_tag="g1"))
    assert dialog.state is state


def test_uas_needs_a_to_tag_and_a_contact() -> None:
    invite = request_from(RR_INVITE)
    with pytest.raises(LocalProtocolError):
        Dialog.create_uas(invite, make_response(invite, 200), local_contact=OUR_CONTACT)
    invite.headers.remove("Contact")
    with pytest.raises(RemoteProtocolError):
        Dialog.create_uas(invite, make_response(invite, 200, to_tag="g"), local_contact=OUR_CONTACT)


# ----------------------------------------------------------------------------- termination


def test_408_or_481_to_in_dialog_request_terminates() -> None:
    for status in (408, 481):
        _, _, ours, _ = rr_dialogs()
        info = ours.new_request("INFO", via=via("i"))
        ours.receive_response(info, make_response(info, status))
        assert ours.state is DialogState.TERMINATED


def test_final_response_to_our_bye_terminates() -> None:
    _, _, ours, _ = rr_dialogs()
    bye = ours.new_request("BYE", via=via("b"))
    ours.receive_response(bye, make_response(bye, 200))
    assert ours.state is DialogState.TERMINATED


def test_secure_flag_needs_sips_over_tls() -> None:
    invite = request_from(
        RR_INVITE.replace("INVITE sip:100@gw.example.com", "INVITE sips:100@gw.example.com").replace(
            "SIP/2.0/UDP p2.example.com", "SIP/2.0/TLS p2.example.com"
        )
    )
    dialog = Dialog.create_uas(invite, make_response(invite, 200, to_tag="g"), local_contact=OUR_CONTACT)
    assert dialog.secure
    assert not Dialog.create_uas(
        request_from(RR_INVITE), make_response(request_from(RR_INVITE), 200, to_tag="g"), local_contact=OUR_CONTACT
    ).secure


def test_response_to_another_request_is_local_misuse() -> None:
    _, _, ours, _ = rr_dialogs()
    info = ours.new_request("INFO", via=via("i"))
    other = ours.new_request("INFO", via=via("j"))
    with pytest.raises(LocalProtocolError):
        ours.receive_response(info, make_response(other, 200))


def test_name_addr_display_names_survive_in_requests() -> None:
    _, _, ours, theirs = rr_dialogs()
    bye = ours.new_request("BYE", via=via("b"))
    assert bye.to.display_name == "Caller"
    assert isinstance(theirs.local_party, NameAddr)
    assert theirs.local_party.display_name == "Caller"
