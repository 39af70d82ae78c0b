"""``broadcast`` and ``campaigns``: one message to many card holders, as a stored campaign.

``broadcast --message TEXT [--search/--template/--state/--platform] [--dry-run] [--yes]``: the
dry run prints whom the message reaches (cards, Apple devices, Google objects), how many are
notified and how many updated silently because their notification budget is spent, and the
warning the seed platform shows. Without ``--yes`` the command shows the same and asks before
sending. ``broadcast --report ID`` (or ``campaigns``) prints a campaign's report, ``broadcast
--resume ID`` finishes one a crash interrupted (a worker also does it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ._options import LazyChoice, card_states
from .cards import _db_option, _echo_json, _run, _table, _when

if TYPE_CHECKING:
    from ..service.campaigns import BroadcastReach, CampaignReport

#: ``--notification-budget`` of ``serve`` and ``worker`` (and PASSKIT_STAMPS_NOTIFICATION_BUDGET):
#: the service's budget (the service's default, 3, is Google's limit too).
notification_budget_option = click.option(
    "--notification-budget",
    envvar="PASSKIT_STAMPS_NOTIFICATION_BUDGET",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Notified updates per card per 24 h; beyond it updates go out silently "
    "(env PASSKIT_STAMPS_NOTIFICATION_BUDGET).",
)


def _reach_lines(reach: BroadcastReach) -> list[str]:
    return [
        f"Cards reached:   {reach.cards:,}",
        f"Apple devices:   {reach.devices:,}",
        f"Google objects:  {reach.google_objects:,}",
        f"Notified:        {reach.notified:,}",
        f"Silent (budget): {reach.silent:,}  (updated without a notification: budget spent)",
        f"In no wallet:    {reach.no_wallet:,}  (nothing to send)",
        "",
        f"Warning: {reach.warning}",
    ]


def _reach_json(reach: BroadcastReach) -> dict[str, Any]:
    return {
        "cards": reach.cards,
        "devices": reach.devices,
        "google_objects": reach.google_objects,
        "notified": reach.notified,
        "silent": reach.silent,
        "no_wallet": reach.no_wallet,
        "warning": reach.warning,
    }


def _report_json(report: CampaignReport) -> dict[str, Any]:
    return {
        "id": report.id,
        "message": report.message,
        "filters": dict(report.filters),
        "state": report.state,
        "cards": report.cards,
        "notified": report.notified,
        "silent": report.silent,
        "created_at": report.created_at.isoformat(),
        "finished_at": report.finished_at.isoformat() if report.finished_at else None,
        "actor": report.actor,
        "platforms": {
            p.platform: {
                "targeted": p.targeted,
                "notified": p.notified,
                "silent": p.silent,
                "delivered": p.delivered,
                "pending": p.pending,
                "failed": p.failed,
            }
            for p in report.platforms
        },
    }


def _echo_report(report: CampaignReport) -> None:
    filters = ", ".join(f"{k}={v}" for k, v in sorted(report.filters.items())) or "all cards"
    click.echo(f"Campaign {report.id} ({report.state}), {_when(report.created_at)}: {filters}")
    click.echo(f"Message: {report.message}")
    click.echo(f"Cards: {report.cards:,}, notified {report.notified:,}, silent {report.silent:,}")
    rows = [
        (p.platform, p.targeted, p.notified, p.silent, p.delivered, p.pending, p.failed)
        for p in report.platforms
    ]
    if rows:
        headers = ("PLATFORM", "TARGETED", "NOTIFIED", "SILENT", "DELIVERED", "PENDING", "FAILED")
        click.echo(_table(headers, rows))


@click.command("broadcast")
@click.option("--message", "-m", default=None, help="The text (1 to 1000 characters).")
@click.option("--search", "-s", default=None, help="Name, email, phone or card number.")
@click.option("--template", "template_id", default=None, help="Only this template id.")
@click.option("--state", type=LazyChoice(card_states), default=None)
@click.option("--platform", type=click.Choice(["web", "apple", "google"]), default=None)
@click.option("--dry-run", is_flag=True, help="Print whom it reaches; send nothing.")
@click.option("--yes", "-y", is_flag=True, help="Send without asking.")
@click.option("--report", "report_id", type=int, default=None, help="Print campaign ID's report.")
@click.option("--resume", "resume_id", type=int, default=None, help="Finish campaign ID.")
@click.option("--batch-size", type=int, default=1000, show_default=True, help="Cards per batch.")
@_db_option
def broadcast(
    message: str | None,
    search: str | None,
    template_id: str | None,
    state: str | None,
    platform: str | None,
    dry_run: bool,
    yes: bool,
    report_id: int | None,
    resume_id: int | None,
    batch_size: int,
    db: str,
    as_json: bool,
) -> None:
    """Send a message to every card holder matching the filters (a stored campaign)."""
    chosen = [x for x in (message is not None, report_id is not None, resume_id is not None) if x]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --message, --report ID, --resume ID")
    if report_id is not None or resume_id is not None:
        campaign_id = report_id if report_id is not None else resume_id
        assert campaign_id is not None
        if resume_id is not None:
            found = _run(db, lambda s: s.resume_campaign(campaign_id, batch_size=batch_size))
        else:
            found = _run(db, lambda s: s.campaign_report(campaign_id), create=False)
        if as_json:
            _echo_json(_report_json(found))
        else:
            _echo_report(found)
        return
    assert message is not None
    filters: dict[str, Any] = {
        "search": search,
        "template_id": template_id,
        "state": state,
        "platform": platform,
    }
    from ..service.campaigns import BroadcastReach, CampaignReport

    reach = _run(db, lambda s: s.broadcast(message, dry_run=True, **filters), create=False)
    assert isinstance(reach, BroadcastReach)
    if dry_run:
        if as_json:
            _echo_json(_reach_json(reach))
        else:
            click.echo("\n".join(_reach_lines(reach)))
        return
    if not yes:
        click.echo("\n".join(_reach_lines(reach)), err=True)
        if not click.confirm(f"Send to {reach.cards:,} card(s)?", err=True):
            raise click.exceptions.Exit(1)
    report = _run(db, lambda s: s.broadcast(message, batch_size=batch_size, **filters))
    assert isinstance(report, CampaignReport)
    if as_json:
        _echo_json(_report_json(report))
    else:
        _echo_report(report)


@click.command("campaigns")
@click.option("--limit", type=int, default=20, show_default=True)
@_db_option
def campaigns(limit: int, db: str, as_json: bool) -> None:
    """The latest broadcasts with their figures (``broadcast --report ID`` for one)."""
    found = _run(db, lambda s: s.list_campaigns(limit=limit), create=False)
    if as_json:
        _echo_json([_report_json(r) for r in found])
        return
    rows = [
        (
            r.id,
            r.state,
            _when(r.created_at),
            r.cards,
            r.notified,
            r.silent,
            sum(p.delivered for p in r.platforms),
            sum(p.failed for p in r.platforms),
            r.message if len(r.message) <= 40 else r.message[:39] + "…",
        )
        for r in found
    ]
    headers = (
        "ID",
        "STATE",
        "CREATED",
        "CARDS",
        "NOTIFIED",
        "SILENT",
        "DELIVERED",
        "FAILED",
        "MESSAGE",
    )
    click.echo(_table(headers, rows))


COMMANDS = (broadcast, campaigns)
