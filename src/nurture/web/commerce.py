"""``GET /api/v1/contacts/{id or email}/recommendations``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from nurture.commerce import purchases, recommendations
from nurture.pack import load_pack
from nurture.web.admin import resolve_contact_id
from nurture.web.auth import require_api_key
from nurture.web.state import web_state

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_api_key)])


class RecommendationItem(BaseModel):
    rank: int
    product_key: str
    name: str
    category: str | None = None
    scenario: str
    reason: str
    score: float


class RecommendationsOut(BaseModel):
    contact_id: int
    segment: str | None
    scenario: str
    items: list[RecommendationItem]


@router.get("/contacts/{ref}/recommendations", response_model=RecommendationsOut, tags=["contacts"])
def get_recommendations(
    request: Request,
    ref: str,
    n: int | None = Query(None, ge=1, le=20, description="Items to return [config, 3]"),
) -> dict[str, Any]:
    """Products for this contact by its ``value`` segment: cross-sell (VIP, Standard), rebuy
    (At Risk), win-back best sellers (Churn, no purchase), each with its reason."""
    container = web_state(request).container
    contact_id = resolve_contact_id(request, ref)
    config = purchases.load_config(load_pack(container.settings.automation_dir))
    return recommendations.for_contact(
        container.db, contact_id, container.clock.now(), config, n, _models(request)
    )


def _models(request: Request) -> recommendations.ModelCache:
    """One model cache per application (so per process, and per test app)."""
    state = request.app.state
    cache: recommendations.ModelCache | None = getattr(state, "recommendation_models", None)
    if cache is None:
        cache = recommendations.ModelCache()
        state.recommendation_models = cache
    return cache
