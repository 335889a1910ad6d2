//! `callflow events`: the log for analysts and operators, through the event
//! store's gRPC API — follow it live (`tail`), read a range (`replay`),
//! export it to JSON Lines or CSV with payloads decoded field by field
//! (`export`), count it (`stats`) and check its hash chain (`verify`).
//! Every event is shown in its newest shape (kit::upcast).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use jiff::Timestamp;

use kit::config::Common;
use kit::events::{from_proto_time, to_proto_time};
use kit::proto::events::v1::Event;
use kit::proto::eventstore::v1::{
    Filter, ForgetContactRequest, ReadAllRequest, SubscribeRequest, VerifyRequest,
};
use kit::store_client::EventStoreClient;

/// The service name the CLI authenticates as.
const NAME: &str = "callflow-cli";

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: EventsCommand,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Follow the log live (from now, or from a position), one JSON line per event.
    Tail {
        #[command(flatten)]
        filter: FilterArgs,
        /// Start after this position instead of at the head.
        #[arg(long)]
        after_position: Option<u64>,
    },
    /// Print a range of the log, one JSON line per event.
    Replay {
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// Write a range of the log to a file, with a progress line; Ctrl-C
    /// leaves a valid partial file and says where to resume.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        range: RangeArgs,
        /// The file to write.
        #[arg(long, short)]
        output: PathBuf,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
        /// Add to the file instead of replacing it (to resume).
        #[arg(long)]
        append: bool,
    },
    /// Count events by type and by day (UTC) of recording.
    Stats {
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// Forget a contact: destroy the keys of their personal data (every
    /// event about them then reads as forgotten). Irreversible.
    Forget {
        /// The contact's number.
        #[arg(long)]
        phone: String,
        /// Who asks (recorded).
        #[arg(long)]
        requested_by: String,
        /// Why, for example a data-subject request number (recorded).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Recompute the log's hash chain; exit 1 if it is broken.
    Verify {
        #[arg(long, default_value_t = 0)]
        after_position: u64,
        #[arg(long, default_value_t = 0)]
        to_position: u64,
    },
}

/// File formats of `export`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// A header line, then one row per event; the payload is a JSON column.
    Csv,
}

#[derive(Debug, Args, Default, Clone)]
pub struct FilterArgs {
    /// Only these categories (repeatable).
    #[arg(long = "category")]
    pub categories: Vec<String>,
    /// Only these event types (repeatable).
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// Only streams starting with these prefixes (repeatable).
    #[arg(long = "stream-prefix")]
    pub stream_prefixes: Vec<String>,
    /// Only these flows (correlation ids, repeatable).
    #[arg(long = "correlation")]
    pub correlation_ids: Vec<String>,
}

#[derive(Debug, Args, Default, Clone)]
pub struct RangeArgs {
    /// Events after this position.
    #[arg(long, default_value_t = 0)]
    pub after_position: u64,
    /// Events up to this position (inclusive).
    #[arg(long, default_value_t = 0)]
    pub to_position: u64,
    /// Events recorded at or after this time (RFC 3339).
    #[arg(long)]
    pub from_time: Option<Timestamp>,
    /// Events recorded before this time (RFC 3339).
    #[arg(long)]
    pub to_time: Option<Timestamp>,
}

impl FilterArgs {
    pub fn filter(&self, range: Option<&RangeArgs>) -> Filter {
        Filter {
            categories: self.categories.clone(),
            types: self.types.clone(),
            stream_prefixes: self.stream_prefixes.clone(),
            correlation_ids: self.correlation_ids.clone(),
            recorded_from: range.and_then(|r| r.from_time).map(to_proto_time),
            recorded_until: range.and_then(|r| r.to_time).map(to_proto_time),
        }
    }
}

/// Runs a subcommand.
pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let store = args.common.event_store(NAME)?;
    match args.command {
        EventsCommand::Tail {
            filter,
            after_position,
        } => tail(&store, &filter, after_position).await,
        EventsCommand::Replay { filter, range } => {
            let stdout = std::io::stdout().lock();
            let mut out = BufWriter::new(stdout);
            for_each(&store, &filter, &range, |event| {
                kit::json::write_line(&mut out, &event)?;
                Ok(())
            })
            .await?;
            out.flush()?;
            Ok(())
        }
        EventsCommand::Export {
            filter,
            range,
            output,
            format,
            append,
        } => export(&store, &filter, &range, &output, format, append).await,
        EventsCommand::Stats { filter, range } => stats(&store, &filter, &range).await,
        EventsCommand::Forget {
            phone,
            requested_by,
            reason,
        } => {
            let number = kit::phone::PhoneNumber::parse(&phone, Default::default())
                .map_err(|e| anyhow::anyhow!("--phone `{phone}` {e}"))?;
            let contact_stream = kit::contacts::contact_stream(&args.common.contact_salt, &number);
            let response = store
                .grpc()
                .forget_contact(ForgetContactRequest {
                    phone,
                    requested_by,
                    reason,
                    contact_stream,
                })
                .await?
                .into_inner();
            println!(
                "forgotten: {} key(s) destroyed; recorded at position {} (contact {})",
                response.keys_destroyed, response.position, response.contact_ref
            );
            Ok(())
        }
        EventsCommand::Verify {
            after_position,
            to_position,
        } => {
            let report = store
                .grpc()
                .verify(VerifyRequest {
                    after_position,
                    to_position,
                })
                .await?
                .into_inner();
            println!(
                "checked {} events up to position {}{}",
                report.checked,
                report.last_position,
                if report.unchained > 0 {
                    format!(" ({} written before the chain existed)", report.unchained)
                } else {
                    String::new()
                }
            );
            if report.intact {
                println!("the chain is intact");
                Ok(())
            } else {
                bail!(
                    "the chain breaks at position {}: {}",
                    report.first_broken_position,
                    report.detail
                )
            }
        }
    }
}

/// Reads the range page by page in position order, newest shapes, until
/// the end or until `visit` fails; returns the last position read.
pub async fn for_each(
    store: &EventStoreClient,
    filter: &FilterArgs,
    range: &RangeArgs,
    visit: impl FnMut(Event) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    for_each_upcast(store, kit::upcast::registry(), filter, range, visit).await
}

/// [`for_each`] with the given upcasters instead of callflow's registry.
pub async fn for_each_upcast(
    store: &EventStoreClient,
    upcasters: &kit::upcast::Upcasters,
    filter: &FilterArgs,
    range: &RangeArgs,
    mut visit: impl FnMut(Event) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let request = ReadAllRequest {
        after_position: range.after_position,
        to_position: range.to_position,
        filter: Some(filter.filter(Some(range))),
        batch_size: 2000,
    };
    let mut stream = store.grpc().read_all(request).await?.into_inner();
    // The next pages are fetched while this one is written: reading and
    // decoding overlap instead of taking turns.
    let (pages, mut next) = tokio::sync::mpsc::channel(4);
    let prefetch = tokio::spawn(async move {
        loop {
            let page = stream.message().await.transpose();
            let end = !matches!(page, Some(Ok(_)));
            if let Some(page) = page
                && pages.send(page).await.is_err()
            {
                return;
            }
            if end {
                return;
            }
        }
    });
    let _stop_prefetch = AbortOnDrop(prefetch);
    let mut last = range.after_position;
    while let Some(page) = next.recv().await {
        let page = page?;
        for event in page.events {
            visit(upcasters.upcast(event))?;
        }
        last = page.checkpoint;
    }
    Ok(last)
}

async fn tail(
    store: &EventStoreClient,
    filter: &FilterArgs,
    after: Option<u64>,
) -> anyhow::Result<()> {
    let after_position = match after {
        Some(position) => position,
        // Only what comes from now on.
        None => store.grpc().head(()).await?.into_inner().position,
    };
    let request = SubscribeRequest {
        after_position,
        filter: Some(filter.filter(None)),
        batch_size: 500,
    };
    let mut stream = store.grpc().subscribe(request).await?.into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(message) = stream.next().await {
        for event in message?.events {
            kit::json::write_line(&mut out, &kit::upcast::registry().upcast(event))?;
        }
        out.flush()?;
    }
    Ok(())
}

/// Aborts a task when dropped (an early return stops the prefetch).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The CSV header of `export`.
pub const CSV_HEADER: &str = "position,event_id,stream,version,category,type,occurred_at,recorded_at,correlation_id,causation_id,producer,payload";

/// One CSV row (RFC 4180 quoting).
pub fn csv_row(event: &Event) -> String {
    let json = kit::json::event(event);
    let payload = json
        .get("payload")
        .or_else(|| json.get("payload_base64"))
        .map(|v| v.to_string())
        .unwrap_or_default();
    let text = |key: &str| {
        json.get(key)
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
            .unwrap_or_default()
    };
    let cells = [
        event.position.to_string(),
        event.event_id.clone(),
        event.stream.clone(),
        event.version.to_string(),
        event.category.clone(),
        event.r#type.clone(),
        text("occurred_at"),
        text("recorded_at"),
        event.correlation_id.clone(),
        event.causation_id.clone(),
        event.producer.clone(),
        payload,
    ];
    cells.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",")
}

fn quote(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}

/// Writes `event` to `out` in `format`.
pub fn write_event(out: &mut impl Write, event: &Event, format: Format) -> std::io::Result<()> {
    match format {
        Format::Jsonl => kit::json::write_line(out, event),
        Format::Csv => writeln!(out, "{}", csv_row(event)),
    }
}

/// Writes the range to `output` (appending when `append`), with progress on
/// a terminal; on Ctrl-C the file holds whole lines up to the position it
/// names for resuming.
pub async fn export(
    store: &EventStoreClient,
    filter: &FilterArgs,
    range: &RangeArgs,
    output: &PathBuf,
    format: Format,
    append: bool,
) -> anyhow::Result<()> {
    let existed = output.exists() && std::fs::metadata(output)?.len() > 0;
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    if format == Format::Csv && !(append && existed) {
        writeln!(out, "{CSV_HEADER}")?;
    }
    let interrupted = tokio_util::sync::CancellationToken::new();
    let on_interrupt = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_interrupt.cancel();
        }
    });
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal();
    let mut written = 0u64;
    let mut last_position = range.after_position;
    let result = for_each(store, filter, range, |event| {
        if interrupted.is_cancelled() {
            bail!("interrupted");
        }
        write_event(&mut out, &event, format)?;
        written += 1;
        last_position = event.position;
        if progress && written.is_multiple_of(10_000) {
            let rate = written as f64 / started.elapsed().as_secs_f64();
            eprint!("\r{written} events, position {last_position}, {rate:.0} events/s   ");
        }
        Ok(())
    })
    .await;
    out.flush()?;
    if progress {
        eprintln!();
    }
    match result {
        Ok(_) => {
            eprintln!(
                "exported {written} events to {} in {:.1}s",
                output.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(error) => {
            // Every line written is complete: the file is valid as it is.
            eprintln!(
                "stopped ({error}) after {written} events; {} holds everything up to position {last_position}.\n\
                 Resume with: callflow events export --after-position {last_position} --append --output {} --format {}",
                output.display(),
                output.display(),
                if format == Format::Csv {
                    "csv"
                } else {
                    "jsonl"
                }
            );
            if error.to_string() == "interrupted" {
                std::process::exit(130)
            } else {
                Err(error)
            }
        }
    }
}

async fn stats(
    store: &EventStoreClient,
    filter: &FilterArgs,
    range: &RangeArgs,
) -> anyhow::Result<()> {
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_day: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0u64;
    for_each(store, filter, range, |event| {
        total += 1;
        *by_type.entry(event.r#type.clone()).or_default() += 1;
        let day = event
            .recorded_at
            .as_ref()
            .and_then(from_proto_time)
            .map(|t| t.strftime("%Y-%m-%d").to_string())
            .unwrap_or_default();
        *by_day.entry(day).or_default() += 1;
        Ok(())
    })
    .await?;
    println!("{total} events");
    println!("\nby type:");
    for (event_type, count) in &by_type {
        println!("  {event_type:<28} {count:>10}");
    }
    println!("\nby day (UTC, recorded):");
    for (day, count) in &by_day {
        println!("  {day:<28} {count:>10}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_when_they_must_be() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
