//! `CREATE TABLE` and `DROP TABLE` for Lookback tables.
//!
//! Why our own: DataFusion's CREATE TABLE makes an in-memory table that vanishes at restart.
//! A Lookback table is storage state ([`Db::create_table`] writes it into the manifest), so
//! these statements are taken before DataFusion plans them: the SQL column types are mapped to
//! ours, the table is created durably, and then registered in the session's catalog (and
//! deregistered by DROP). `CREATE TABLE ... AS SELECT` creates the table from the query's
//! columns and fills it through the normal INSERT path.

use crate::arrow::LOOKBACK_TYPE_KEY;
use crate::error::{storage_error, SqlError};
use crate::scan::LookbackTable;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::TableReference;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    ColumnOption, CreateTable, DataType as SqlType, Ident, ObjectName, ObjectType, Statement, TimezoneInfo,
};
use lookback_common::schema::SCHEMA_NAME_BYTES_MAX;
use lookback_common::{ColumnDef, ColumnType, Schema};
use lookback_storage::Db;
use std::sync::Arc;

/// The types a column can have, as the error for any other type lists them.
const TYPES_HINT: &str =
    "Lookback columns are boolean, bigint (any integer type), double precision (real, float), text (varchar, char, json), timestamptz (timestamp) and uuid";

/// What a DDL statement did: the command tag PostgreSQL sends for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdlOutcome {
    CreateTable,
    DropTable,
    /// CREATE TABLE ... AS SELECT: `SELECT n`.
    CreateTableAs(u64),
}

/// Whether `statement` is one [`execute`] handles.
pub fn handles(statement: &Statement) -> bool {
    matches!(statement, Statement::CreateTable(_) | Statement::Drop { object_type: ObjectType::Table, .. })
}

/// Runs a CREATE TABLE or DROP TABLE statement (see [`handles`]). Blocks on manifest writes.
pub async fn execute(ctx: &SessionContext, db: &Arc<Db>, statement: &Statement) -> Result<DdlOutcome> {
    match statement {
        Statement::CreateTable(create) => create_table(ctx, db, create).await,
        Statement::Drop { object_type: ObjectType::Table, if_exists, names, .. } => {
            drop_tables(ctx, db, names, *if_exists)?;
            Ok(DdlOutcome::DropTable)
        }
        other => Err(DataFusionError::Internal(format!("not a DDL statement: {other}"))),
    }
}

async fn create_table(ctx: &SessionContext, db: &Arc<Db>, create: &CreateTable) -> Result<DdlOutcome> {
    refuse_options(create)?;
    let name = table_name(&create.name)?;
    if create.if_not_exists && db.schema(&name).is_some() {
        return Ok(DdlOutcome::CreateTable);
    }
    let query = match &create.query {
        Some(query) => Some(ctx.sql(&query.to_string()).await?),
        None => None,
    };
    let columns = match &query {
        Some(df) if create.columns.is_empty() => columns_of_query(df.schema().fields())?,
        Some(_) => return Err(SqlError::new("0A000", "CREATE TABLE ... AS with a column list is not supported").into()),
        None => create.columns.iter().map(column_def).collect::<Result<Vec<_>>>()?,
    };
    let schema = Schema::new(&name, columns, Vec::new(), Vec::new()).map_err(|e| SqlError::new("42P16", e.to_string()))?;
    db.create_table(schema.clone()).map_err(storage_error)?;
    let schema = Arc::new(schema);
    ctx.register_table(TableReference::bare(name.as_str()), Arc::new(LookbackTable::new(db.clone(), &name, schema)))?;
    let Some(_) = query else { return Ok(DdlOutcome::CreateTable) };
    let insert = format!("INSERT INTO {} {}", quote_ident(&name), create.query.as_ref().map(|q| q.to_string()).unwrap_or_default());
    match insert_rows(ctx, &insert).await {
        Ok(rows) => Ok(DdlOutcome::CreateTableAs(rows)),
        Err(e) => {
            // All or nothing, as in PostgreSQL: a failed fill leaves no table behind.
            let _ = ctx.deregister_table(TableReference::bare(name.as_str()));
            if let Err(drop_error) = db.drop_table(&name) {
                tracing::warn!(table = %name, error = %drop_error, "could not drop a table whose CREATE TABLE AS failed");
            }
            Err(e)
        }
    }
}

async fn insert_rows(ctx: &SessionContext, sql: &str) -> Result<u64> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let count = batches.first().and_then(|b| b.column(0).as_any().downcast_ref::<datafusion::arrow::array::UInt64Array>().map(|a| a.value(0)));
    Ok(count.unwrap_or(0))
}

fn drop_tables(ctx: &SessionContext, db: &Arc<Db>, names: &[ObjectName], if_exists: bool) -> Result<()> {
    let names = names.iter().map(table_name).collect::<Result<Vec<_>>>()?;
    for name in &names {
        if db.schema(name).is_none() && !if_exists {
            return Err(SqlError::new("42P01", format!("table \"{name}\" does not exist")).into());
        }
    }
    for name in names.iter().filter(|n| db.schema(n).is_some()) {
        db.drop_table(name).map_err(storage_error)?;
        ctx.deregister_table(TableReference::bare(name.as_str()))?;
    }
    Ok(())
}

/// Options of CREATE TABLE that would change what the table is; refused rather than ignored.
fn refuse_options(create: &CreateTable) -> Result<()> {
    let unsupported = |what: &str| Err(SqlError::new("0A000", format!("CREATE TABLE with {what} is not supported")).into());
    if create.or_replace {
        return unsupported("OR REPLACE");
    }
    if create.temporary {
        return unsupported("TEMPORARY");
    }
    if create.external {
        return unsupported("EXTERNAL");
    }
    if !create.constraints.is_empty() {
        return Err(SqlError::new("0A000", "table constraints (PRIMARY KEY, UNIQUE, FOREIGN KEY, CHECK) are not supported")
            .with_hint("Lookback tables are append-only column stores; only NOT NULL is enforced")
            .into());
    }
    Ok(())
}

/// `t`, `public.t` or `lookback.public.t`, as a storage table name (unquoted names fold to
/// lower case, as in PostgreSQL).
pub fn table_name(name: &ObjectName) -> Result<String> {
    let parts: Vec<&Ident> = name.0.iter().filter_map(|p| p.as_ident()).collect();
    if parts.len() != name.0.len() || parts.is_empty() || parts.len() > 3 {
        return Err(SqlError::new("42601", format!("invalid table name \"{name}\"")).into());
    }
    let folded: Vec<String> = parts.iter().map(|i| fold_ident(i)).collect();
    if let [schema, _] | [_, schema, _] = folded.as_slice() {
        if schema != "public" {
            return Err(SqlError::new("3F000", format!("schema \"{schema}\" does not exist")).into());
        }
    }
    let table = folded.last().cloned().unwrap_or_default();
    if table.len() > SCHEMA_NAME_BYTES_MAX {
        return Err(SqlError::new("42622", format!("identifier \"{table}\" is longer than {SCHEMA_NAME_BYTES_MAX} bytes")).into());
    }
    Ok(table)
}

/// An identifier as PostgreSQL resolves it: unquoted folds to lower case.
pub fn fold_ident(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// `name` as a quoted SQL identifier (for statements this crate writes itself).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn column_def(column: &datafusion::sql::sqlparser::ast::ColumnDef) -> Result<ColumnDef> {
    let ty = column_type(&column.data_type)?;
    let mut nullable = true;
    for option in &column.options {
        match &option.option {
            ColumnOption::NotNull => nullable = false,
            ColumnOption::Null => nullable = true,
            other => {
                return Err(SqlError::new("0A000", format!("column option {other} is not supported"))
                    .with_hint("only NULL and NOT NULL are; Lookback tables have no defaults, keys or checks")
                    .into())
            }
        }
    }
    Ok(ColumnDef::new(&fold_ident(&column.name), ty, nullable))
}

fn column_type(ty: &SqlType) -> Result<ColumnType> {
    use SqlType as T;
    Ok(match ty {
        T::Bool | T::Boolean => ColumnType::Bool,
        T::SmallInt(_) | T::Int2(_) | T::Int(_) | T::Int4(_) | T::Integer(_) | T::BigInt(_) | T::Int8(_) => ColumnType::Int64,
        T::Int16 | T::Int32 | T::Int64 => ColumnType::Int64,
        T::Real | T::Float4 | T::Float8 | T::Float32 | T::Float64 | T::DoublePrecision | T::Double(_) | T::Float(_) => {
            ColumnType::Float64
        }
        T::Text | T::String(_) | T::Varchar(_) | T::CharacterVarying(_) | T::CharVarying(_) | T::Char(_) | T::Character(_) => {
            ColumnType::Text
        }
        T::JSON | T::JSONB => ColumnType::Text,
        T::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithTimeZone | TimezoneInfo::WithoutTimeZone | TimezoneInfo::Tz) => {
            ColumnType::Timestamp
        }
        T::Uuid => ColumnType::Uuid,
        T::Custom(name, _) => match name.to_string().to_lowercase().as_str() {
            "timestamptz" => ColumnType::Timestamp,
            "uuid" => ColumnType::Uuid,
            "int8" | "int4" | "int2" => ColumnType::Int64,
            "float8" | "float4" => ColumnType::Float64,
            "bool" => ColumnType::Bool,
            other => return Err(SqlError::new("42704", format!("type \"{other}\" does not exist")).with_hint(TYPES_HINT).into()),
        },
        other => return Err(SqlError::new("0A000", format!("type {other} is not supported")).with_hint(TYPES_HINT).into()),
    })
}

/// The Lookback columns for a query's output (CREATE TABLE AS).
fn columns_of_query(fields: &[Arc<Field>]) -> Result<Vec<ColumnDef>> {
    fields.iter().map(|f| Ok(ColumnDef::new(f.name(), arrow_column_type(f)?, true))).collect()
}

fn arrow_column_type(field: &Field) -> Result<ColumnType> {
    if field.metadata().get(LOOKBACK_TYPE_KEY).is_some_and(|v| v == "uuid") {
        return Ok(ColumnType::Uuid);
    }
    Ok(match field.data_type() {
        DataType::Boolean => ColumnType::Bool,
        t if t.is_integer() => ColumnType::Int64,
        t if t.is_floating() || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) => ColumnType::Float64,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => ColumnType::Timestamp,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::Text,
        DataType::Dictionary(_, v) if matches!(v.as_ref(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => ColumnType::Text,
        DataType::Null => ColumnType::Text,
        other => {
            return Err(SqlError::new("0A000", format!("column \"{}\" has type {other}, which a table cannot store", field.name()))
                .with_hint(TYPES_HINT)
                .into())
        }
    })
}
