//! The statements Lookback answers itself on the Postgres endpoint, before DataFusion plans
//! anything: CREATE TABLE / DROP TABLE (storage tables, `lookback_query::ddl`) and COPY FROM
//! STDIN / TO STDOUT (`lookback_query::copy`), and a `SHOW` without a name (a syntax error
//! the protocol library's SET/SHOW hook would index into and panic on). This module only speaks the protocol for them:
//! command tags, the COPY sub-protocol, and the per-connection state of a COPY in progress.

use super::sql_error;
use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use datafusion::common::{DFSchema, ParamValues};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Set, Statement};
use datafusion_postgres::pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse};
use datafusion_postgres::pgwire::api::Type;
use lookback_scoring::{DevicePreference, ModelRegistry};
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::copy::CopyHandler;
use datafusion_postgres::pgwire::api::results::{CopyResponse, Response, Tag};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::pgwire::error::ErrorInfo;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::QueryHook;
use lookback_query::SqlError;
use futures::{Sink, SinkExt, StreamExt};
use lookback_query::copy::{self, CopyFormat, CopyIn, CopyPlan};
use lookback_query::ddl::{self, DdlOutcome};
use lookback_storage::Db;
use std::fmt::Debug;
use std::sync::Arc;
use tokio::sync::Mutex;

pub(super) struct LookbackStatements {
    pub db: Arc<Db>,
    pub models: Arc<ModelRegistry>,
}

/// The server setting Lookback answers itself: where `score(...)` runs.
const SCORING_DEVICE: &str = "scoring_device";

/// `SET scoring_device = ...` (the value) or `SHOW scoring_device` (None).
fn scoring_device(statement: &Statement) -> Option<Option<&SqlExpr>> {
    match statement {
        Statement::Set(Set::SingleAssignment { variable, values, .. }) if variable.to_string().eq_ignore_ascii_case(SCORING_DEVICE) => {
            values.first().map(Some)
        }
        Statement::ShowVariable { variable } if variable.len() == 1 && variable[0].value.eq_ignore_ascii_case(SCORING_DEVICE) => Some(None),
        _ => None,
    }
}

/// `SHOW` with no parameter name, which the parser accepts.
fn nameless_show(statement: &Statement) -> bool {
    matches!(statement, Statement::ShowVariable { variable } if variable.is_empty())
}

fn handles(statement: &Statement) -> bool {
    nameless_show(statement)
        || ddl::handles(statement)
        || copy::handles(statement)
        || matches!(statement, Statement::Deallocate { .. })
        || scoring_device(statement).is_some()
}

fn api_error(e: DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(e))
}

impl LookbackStatements {
    async fn run(&self, statement: &Statement, ctx: &SessionContext, client: &mut dyn HookClient) -> PgWireResult<Response> {
        if nameless_show(statement) {
            return Err(api_error(SqlError::new("42601", "syntax error: SHOW needs the name of a parameter").into()));
        }
        if let Some(value) = scoring_device(statement) {
            return self.scoring_device(value);
        }
        if let Statement::Deallocate { name, .. } = statement {
            return deallocate(&name.value, ctx, client).await;
        }
        if ddl::handles(statement) {
            let tag = match ddl::execute(ctx, &self.db, statement).await.map_err(api_error)? {
                DdlOutcome::CreateTable => Tag::new("CREATE TABLE"),
                DdlOutcome::DropTable => Tag::new("DROP TABLE"),
                DdlOutcome::CreateTableAs(rows) => Tag::new("SELECT").with_rows(rows as usize),
            };
            return Ok(Response::Execution(tag));
        }
        match copy::plan(&self.db, statement).map_err(api_error)? {
            CopyPlan::In(copy_in) => {
                let (format, columns) = (format_code(copy_in.format()), copy_in.columns());
                *copy_slot(client).lock().await = CopyState::Running(Box::new(copy_in));
                Ok(Response::CopyIn(CopyResponse::new(format, columns, futures::stream::empty())))
            }
            CopyPlan::Out { query, options } => {
                let (columns, rows) = copy::copy_out(ctx, &query, &options).await.map_err(api_error)?;
                let data = rows.map(|row| row.map(|bytes| CopyData::new(Bytes::from(bytes))).map_err(api_error));
                Ok(Response::CopyOut(CopyResponse::new(format_code(options.format), columns, data)))
            }
        }
    }
}

impl LookbackStatements {
    /// `SET scoring_device = 'auto' | 'cpu' | 'cuda'` (refused with 55000 for `cuda` on a
    /// machine without a usable GPU) and `SHOW scoring_device`. The setting is the server's.
    fn scoring_device(&self, value: Option<&SqlExpr>) -> PgWireResult<Response> {
        let Some(value) = value else {
            let shown = self.models.preference().name();
            let fields = Arc::new(vec![FieldInfo::new(SCORING_DEVICE.into(), None, None, Type::TEXT, FieldFormat::Text)]);
            let mut encoder = DataRowEncoder::new(fields.clone());
            encoder.encode_field(&Some(shown))?;
            let row = encoder.take_row();
            return Ok(Response::Query(QueryResponse::new(fields, Box::pin(futures::stream::once(async move { Ok(row) })))));
        };
        let text = match value {
            SqlExpr::Value(v) => v.clone().into_string().unwrap_or_else(|| v.to_string()),
            SqlExpr::Identifier(ident) => ident.value.clone(),
            other => other.to_string(),
        };
        let invalid = |message: String| api_error(SqlError::new("22023", message).into());
        let preference = DevicePreference::parse(&text)
            .ok_or_else(|| invalid(format!("invalid value for parameter \"scoring_device\": \"{text}\"; use auto, cpu or cuda")))?;
        if preference == DevicePreference::Cuda {
            if let Err(e) = lookback_scoring::cuda::gpu() {
                return Err(api_error(SqlError::new("55000", format!("scoring_device cannot be cuda here: {e}")).into()));
            }
        }
        self.models.set_preference(preference);
        Ok(Response::Execution(Tag::new("SET")))
    }
}

/// `DEALLOCATE name` and `DEALLOCATE ALL` for statements prepared over the extended protocol
/// (drivers such as psycopg evict them with SQL); names from SQL `PREPARE` go to DataFusion.
/// The protocol library's statement store cannot be listed, so `ALL` forgets nothing early:
/// a connection's statements are freed when it closes, and a name deallocated by ALL stays
/// usable instead of failing.
async fn deallocate(name: &str, ctx: &SessionContext, client: &mut dyn HookClient) -> PgWireResult<Response> {
    if name.eq_ignore_ascii_case("all") {
        return Ok(Response::Execution(Tag::new("DEALLOCATE ALL")));
    }
    let store = client.portal_store();
    if store.get_statement(name).is_some() {
        store.rm_statement(name);
        return Ok(Response::Execution(Tag::new("DEALLOCATE")));
    }
    let sql = format!("DEALLOCATE {}", ddl::quote_ident(name));
    match ctx.sql(&sql).await {
        Ok(_) => {}
        Err(e) if e.to_string().contains("does not exist") => {
            return Err(api_error(SqlError::new("26000", format!("prepared statement \"{name}\" does not exist")).into()));
        }
        Err(e) => return Err(api_error(e)),
    }
    Ok(Response::Execution(Tag::new("DEALLOCATE")))
}


/// The overall format code of a CopyIn/CopyOutResponse: 0 for textual (text and CSV).
fn format_code(_format: CopyFormat) -> i8 {
    0
}

#[async_trait]
impl QueryHook for LookbackStatements {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !handles(statement) {
            return None;
        }
        Some(self.run(statement, ctx, client).await)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if !handles(statement) {
            return None;
        }
        // No rows to describe (the statement runs at Execute), but for SHOW's one column.
        let columns = match scoring_device(statement) {
            Some(None) => vec![Field::new(SCORING_DEVICE, DataType::Utf8, false)],
            _ => Vec::new(),
        };
        let schema = DFSchema::try_from(ArrowSchema::new(columns)).map_err(api_error);
        Some(schema.map(|s| LogicalPlan::EmptyRelation(EmptyRelation { produce_one_row: false, schema: Arc::new(s) })))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !handles(statement) {
            return None;
        }
        Some(self.run(statement, ctx, client).await)
    }
}

/// A connection's COPY FROM STDIN, between the CopyInResponse and CopyDone or CopyFail.
#[derive(Default)]
enum CopyState {
    #[default]
    Idle,
    Running(Box<CopyIn>),
    /// A record failed: the rest of the data is read and dropped, and CopyDone gets the error.
    Failed(DataFusionError),
}

type CopySlot = Mutex<CopyState>;

fn copy_slot<C: ClientInfo + ?Sized>(client: &C) -> Arc<CopySlot> {
    client.session_extensions().get_or_insert_with(CopySlot::default)
}

pub(super) struct CopyIns;

#[async_trait]
impl CopyHandler for CopyIns {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let slot = copy_slot(client);
        let mut state = slot.lock().await;
        if let CopyState::Running(copy_in) = &mut *state {
            if let Err(e) = copy_in.data(&copy_data.data).await {
                *state = CopyState::Failed(e);
            }
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let slot = copy_slot(client);
        let state = std::mem::take(&mut *slot.lock().await);
        let result = match state {
            CopyState::Running(copy_in) => copy_in.finish().await,
            CopyState::Failed(e) => Err(e),
            CopyState::Idle => Err(DataFusionError::Plan("CopyDone without a COPY in progress".into())),
        };
        match result {
            Ok(rows) => {
                let tag = Tag::new("COPY").with_rows(rows as usize);
                client.send(PgWireBackendMessage::CommandComplete(tag.into())).await?;
                Ok(())
            }
            Err(e) => Err(PgWireError::UserError(Box::new(sql_error(&e)))),
        }
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let slot = copy_slot(client);
        *slot.lock().await = CopyState::Idle;
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "57014".into(),
            format!("COPY from stdin failed: {}", fail.message),
        )))
    }
}
