"""What each account may see and manage: tenancy, said once for the API, the CLI and the pages.

Another tenant's rows are refused exactly as ids that do not exist (404), so ids cannot be probed; a verb the role
may not use at all is refused naming the roles that may (403). Each check raises studio.errors.Refused.
"""

from __future__ import annotations

from sqlmodel import Session, select

from studio.accounts import Principal, Role
from studio.errors import Refused
from studio.models import Agency, Avatar, Channel, Consent, Creator, Product, Script, utcnow


def get_or_404(session: Session, model, row_id: str, what: str):
    """The row, or a 404 refusal naming what and which id."""
    row = session.get(model, row_id)
    if row is None:
        raise Refused(404, f"{what} {row_id!r} does not exist")
    return row


def need_role(who: Principal, *roles: Role) -> None:
    """403 unless `who` has one of `roles` (admins always may)."""
    if who.role is Role.admin or who.role in roles:
        return
    allowed = ", ".join(r.value for r in (*roles, Role.admin))
    raise Refused(403, f"a {who.role.value} account may not do this; it needs one of: {allowed}")


def hidden(what: str, row_id: str) -> Refused:
    """The answer for a row that exists but belongs to someone else: the same as for one that does not."""
    return Refused(404, f"{what} {row_id!r} does not exist")


def granting_consents(session: Session, *, agency_id: str, avatar_id: str | None = None) -> list[Consent]:
    """Consents that grant `agency_id` and are in force now (granted, within their term)."""
    now = utcnow()
    q = select(Consent).where(Consent.agency_id == agency_id, Consent.status == "granted",
                              Consent.starts_at <= now, Consent.ends_at > now)
    if avatar_id is not None:
        q = q.where(Consent.avatar_id == avatar_id)
    return list(session.exec(q))


def creator_for(session: Session, who: Principal, creator_id: str) -> None:
    """Only the creator themself (or an admin) manages a creator's things."""
    get_or_404(session, Creator, creator_id, "creator")
    if not who.owns_creator(creator_id):
        raise hidden("creator", creator_id)


def avatar_for(session: Session, who: Principal, avatar_id: str, *, manage: bool = False) -> Avatar:
    """The avatar if `who` may see it: its creator, an admin, or (to read) an agency that a consent in force
    grants it to."""
    avatar = get_or_404(session, Avatar, avatar_id, "avatar")
    if who.owns_creator(avatar.creator_id):
        return avatar
    if not manage and who.role is Role.agency and who.agency_id \
            and granting_consents(session, agency_id=who.agency_id, avatar_id=avatar_id):
        return avatar
    raise hidden("avatar", avatar_id)


def consent_for(session: Session, who: Principal, consent_id: str, *, manage: bool = False) -> Consent:
    """The consent if `who` may see it: the avatar's creator, an admin, or (to read) the agency it grants."""
    consent = get_or_404(session, Consent, consent_id, "consent")
    if who.owns_creator(consent.creator_id):
        return consent
    if not manage and who.role is Role.agency and who.agency_id and consent.agency_id == who.agency_id:
        return consent
    raise hidden("consent", consent_id)


def channel_for(session: Session, who: Principal, channel_id: str, *, manage: bool = False) -> Channel:
    """The channel if `who` may see it: its agency, an admin, or (to read its health) ops."""
    channel = get_or_404(session, Channel, channel_id, "channel")
    if who.owns_agency_item(channel.agency_id) or (not manage and who.role is Role.ops):
        return channel
    raise hidden("channel", channel_id)


def product_for(session: Session, who: Principal, product_id: str) -> Product:
    product = get_or_404(session, Product, product_id, "product")
    if who.owns_agency_item(product.agency_id):
        return product
    raise hidden("product", product_id)


def script_for(session: Session, who: Principal, script_id: str) -> Script:
    script = get_or_404(session, Script, script_id, "script")
    product = session.get(Product, script.product_id)
    if product is not None and who.owns_agency_item(product.agency_id):
        return script
    raise hidden("script", script_id)


def owner_agency(session: Session, who: Principal, asked: str | None) -> str | None:
    """The agency a new channel or product belongs to: an agency member's own (naming another is refused); an
    admin's choice, which must exist (None: the platform's own)."""
    if who.role is Role.agency:
        if asked is not None and asked != who.agency_id:
            raise Refused(403, f"an agency member creates things for their own agency, not {asked!r}")
        return who.agency_id
    if asked is not None and session.get(Agency, asked) is None:
        raise Refused(422, f"agency_id: agency {asked!r} does not exist")
    return asked
