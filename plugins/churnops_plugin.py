"""The ML Test Score inside the Airflow UI: the dashboard app and its menu entry.

Airflow mounts a plugin's FastAPI app as it is, with no authentication of its own, so
every request here is checked against the same JWT the Airflow UI and REST API use (the
``Authorization: Bearer`` header, or the ``_token`` cookie the UI sets at login), and
the user must be allowed to see the Airflow website. The app itself is
``gates.api``; this module only mounts it and supplies that check.

Airflow imports this module in every component (scheduler, DAG processor, workers), so
it imports nothing heavy: FastAPI and SQLAlchemy, which Airflow has loaded already.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.plugins_manager import AirflowPlugin

from gates.api import AuthenticationRequired, create_app

if TYPE_CHECKING:
    from fastapi import Request

URL_PREFIX = "/churnops"
VIEW_NAME = "ML Test Score"


async def authenticate_airflow_user(request: Request) -> str:
    """The name of the Airflow user the request carries, checked by Airflow itself.

    Reuses the API server's own ``get_user`` dependency, so token expiry, revocation
    and the auth manager's trusted middlewares behave exactly as on ``/api/v2``.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user
    from fastapi import HTTPException

    auth_manager = get_auth_manager()
    credentials = await bearer_scheme(request)
    try:
        user = await get_user(request, None, credentials)
    except HTTPException as exc:
        login_url = auth_manager.get_url_login(next_url=str(request.url))
        raise AuthenticationRequired(
            f"sign in to Airflow first: {exc.detail}", login_url=login_url
        ) from exc

    if not auth_manager.is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(
            status_code=403,
            detail=f"Airflow user {user.get_name()!r} may not view the Airflow website",
        )
    return user.get_name()


class ChurnopsPlugin(AirflowPlugin):
    """Mounts the ML Test Score dashboard and API at /churnops."""

    name = "churnops"
    fastapi_apps = [  # noqa: RUF012 (AirflowPlugin declares these as class lists)
        {
            "app": create_app(auth_dependency=authenticate_airflow_user),
            "url_prefix": URL_PREFIX,
            "name": "churnops ML Test Score",
        }
    ]
    external_views = [  # noqa: RUF012
        {
            "name": VIEW_NAME,
            # Relative to the UI's <base href>, so a base_url sub-path still works.
            "href": URL_PREFIX.lstrip("/") + "/",
            "url_route": "ml-test-score",
            "destination": "nav",
            "nav_top_level": True,
        }
    ]
