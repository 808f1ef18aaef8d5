"""Creators, products, scripts, channels (with destinations) and shows."""

from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import select

from api.auth import (
    PrincipalDep,
    channel_for,
    creator_for,
    need_role,
    script_for,
)
from api.deps import RuntimeDep, SessionDep, get_or_404
from api.pagination import PageDep
from api.service import catalog as service
from api.service.catalog import (  # noqa: F401  (the request and response bodies)
    ChannelIn,
    ChannelOut,
    DestinationIn,
    ShowIn,
    ShowOut,
    _channel_out,
)
from studio.accounts import Role
from studio.models import (
    Channel,
    Creator,
    CreatorCreate,
    CreatorPublic,
    Product,
    ProductCreate,
    ProductPublic,
    Script,
    ScriptCreate,
    ScriptPublic,
    Show,
)

router = APIRouter()


@router.post("/creators", response_model=CreatorPublic, status_code=201, tags=["creators"])
def create_creator(body: CreatorCreate, session: SessionDep, who: PrincipalDep):
    """An admin adds a creator (creators may also sign themselves up: POST /api/auth/signup)."""
    return service.create_creator(session, who, body)


@router.get("/creators/{creator_id}", response_model=CreatorPublic, tags=["creators"])
def read_creator(creator_id: str, session: SessionDep, who: PrincipalDep):
    creator_for(session, who, creator_id)
    return get_or_404(session, Creator, creator_id, "creator")


@router.post("/products", response_model=ProductPublic, status_code=201, tags=["products"])
def create_product(body: ProductCreate, session: SessionDep, who: PrincipalDep):
    return service.create_product(session, who, body)


@router.post("/scripts", response_model=ScriptPublic, status_code=201, tags=["scripts"])
def create_script(body: ScriptCreate, session: SessionDep, who: PrincipalDep):
    """Save a promotion script; it is linted first (POLICY S1-S3) and refused with every finding that is an
    error: the rule, the words, and how to fix it. The consent scope (S4) is checked when a show uses it."""
    return service.create_script(session, who, body)


@router.post("/channels", response_model=ChannelOut, status_code=201, tags=["channels"])
def create_channel(body: ChannelIn, session: SessionDep, rt: RuntimeDep, who: PrincipalDep):
    return service.create_channel(session, who, body, rt=rt)


@router.get("/channels", response_model=list[ChannelOut], tags=["channels"])
def list_channels(session: SessionDep, who: PrincipalDep, page: PageDep):
    """An agency's own channels; ops and admins see all (stream keys masked, as everywhere)."""
    need_role(who, Role.agency, Role.ops)
    q = select(Channel).order_by(Channel.created_at, Channel.id)
    if who.role is Role.agency:
        q = q.where(Channel.agency_id == who.agency_id)
    return [_channel_out(session, ch) for ch in page.rows(session, q)]


@router.get("/channels/{channel_id}", response_model=ChannelOut, tags=["channels"])
def read_channel(channel_id: str, session: SessionDep, who: PrincipalDep):
    return _channel_out(session, channel_for(session, who, channel_id))


@router.get("/products", response_model=list[ProductPublic], tags=["products"])
def list_products(session: SessionDep, who: PrincipalDep, page: PageDep):
    need_role(who, Role.agency)
    q = select(Product).order_by(Product.created_at, Product.id)
    if who.role is Role.agency:
        q = q.where(Product.agency_id == who.agency_id)
    return page.rows(session, q)


@router.get("/scripts", response_model=list[ScriptPublic], tags=["scripts"])
def list_scripts(session: SessionDep, who: PrincipalDep, page: PageDep, product_id: str | None = None):
    need_role(who, Role.agency)
    q = select(Script).join(Product, Product.id == Script.product_id).order_by(Script.created_at, Script.id)
    if who.role is Role.agency:
        q = q.where(Product.agency_id == who.agency_id)
    if product_id is not None:
        q = q.where(Script.product_id == product_id)
    return page.rows(session, q)


@router.get("/scripts/{script_id}", response_model=ScriptPublic, tags=["scripts"])
def read_script(script_id: str, session: SessionDep, who: PrincipalDep):
    return script_for(session, who, script_id)


@router.post("/shows", response_model=ShowOut, status_code=201, tags=["shows"])
def create_show(body: ShowIn, session: SessionDep, rt: RuntimeDep, who: PrincipalDep):
    """A show, once every presenter's consent, every script and every destination passes; `awaiting_approval`
    names the scripts that wait for the creator's approval."""
    return service.create_show(session, who, body, rt=rt)


@router.get("/shows", response_model=list[ShowOut], tags=["shows"])
def list_shows(session: SessionDep, who: PrincipalDep, page: PageDep, channel_id: str | None = None):
    """An agency's shows (those on its channels); ops and admins see all."""
    need_role(who, Role.agency, Role.ops)
    q = select(Show).join(Channel, Channel.id == Show.channel_id).order_by(Show.starts_at, Show.id)
    if who.role is Role.agency:
        q = q.where(Channel.agency_id == who.agency_id)
    if channel_id is not None:
        q = q.where(Show.channel_id == channel_id)
    return [ShowOut(**s.model_dump(include=set(ShowOut.model_fields) - {"awaiting_approval"}))
            for s in page.rows(session, q)]
