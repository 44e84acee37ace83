//! Equality filters on bitmap-indexed columns (`event_type = 'install'`,
//! `event_type IN ('install', 'purchase')`), applied by the scan itself.
//!
//! Why: every segment keeps one roaring bitmap of row ids per distinct value of its bitmap
//! columns. For such a filter the scan takes the union of the values' bitmaps once per
//! segment, skips the blocks it does not touch, and keeps only the rows it names in the others,
//! so the filter column is never decoded for segment rows and DataFusion does not evaluate the
//! filter again: the pushdown is exact. Memtable batches have no bitmaps; there the scan
//! compares the column itself.

use datafusion::arrow::array::BooleanArray;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use lookback_common::batch::Column;
use lookback_common::{ColumnType, Schema};
use lookback_storage::segment::Segment;
use roaring::RoaringBitmap;

/// Values an IN list may name before the filter is left to DataFusion.
const IN_LIST_VALUES_MAX: usize = 64;

/// `column = value` or `column IN (values)` on a bitmap-indexed text column.
#[derive(Clone, Debug, PartialEq)]
pub struct BitmapFilter {
    pub column: usize,
    pub values: Vec<String>,
}

impl BitmapFilter {
    /// The filter `expr` is, if it is one the scan can apply exactly.
    pub fn of(expr: &Expr, schema: &Schema) -> Option<BitmapFilter> {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => {
                let (column, value) = match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => (c, v),
                    _ => return None,
                };
                let column = bitmap_column(schema, &column.name)?;
                Some(BitmapFilter { column, values: vec![text(value)?] })
            }
            Expr::InList(list) if !list.negated && list.list.len() <= IN_LIST_VALUES_MAX => {
                let Expr::Column(c) = list.expr.as_ref() else { return None };
                let column = bitmap_column(schema, &c.name)?;
                let values = list
                    .list
                    .iter()
                    .map(|e| match e {
                        Expr::Literal(v, _) => text(v),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some(BitmapFilter { column, values })
            }
            _ => None,
        }
    }

    /// Row ids of `segment` that pass.
    pub fn segment_rows(&self, segment: &Segment) -> Result<RoaringBitmap> {
        let mut rows = RoaringBitmap::new();
        for value in &self.values {
            let bitmap = segment
                .bitmap(self.column, value)
                .map_err(|e| DataFusionError::from(crate::error::storage_error(e.into())))?
                .ok_or_else(|| DataFusionError::Internal(format!("segment has no bitmap for column {}", self.column)))?;
            rows |= bitmap;
        }
        Ok(rows)
    }

    /// Which rows of a memtable column pass.
    pub fn mask(&self, column: &Column) -> BooleanArray {
        (0..column.len()).map(|i| Some(column.text(i).is_some_and(|v| self.values.iter().any(|x| x == v)))).collect()
    }
}

fn bitmap_column(schema: &Schema, name: &str) -> Option<usize> {
    let i = schema.column_index(name)?;
    (schema.columns[i].ty == ColumnType::Text && schema.bitmap_columns.contains(&i)).then_some(i)
}

fn text(value: &ScalarValue) -> Option<String> {
    match value {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
        ScalarValue::Dictionary(_, inner) => text(inner),
        _ => None,
    }
}

/// Rows `first..first + rows` of a segment that `selection` names, as a mask over the block.
pub fn block_mask(selection: &RoaringBitmap, first: u32, rows: usize) -> BooleanArray {
    let mut mask = vec![false; rows];
    for row in selection.range(first..first.saturating_add(rows as u32)) {
        mask[(row - first) as usize] = true;
    }
    BooleanArray::from(mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn equality_and_in_lists_on_bitmap_columns_only() {
        let schema = Schema::events();
        let f = BitmapFilter::of(&col("event_type").eq(lit("install")), &schema).unwrap();
        assert_eq!(f.values, vec!["install".to_string()]);
        let f = BitmapFilter::of(&lit("open").eq(col("event_type")), &schema).unwrap();
        assert_eq!(f.values, vec!["open".to_string()]);
        let f = BitmapFilter::of(&col("event_type").in_list(vec![lit("a"), lit("b")], false), &schema).unwrap();
        assert_eq!(f.values.len(), 2);
        assert_eq!(BitmapFilter::of(&col("event_type").in_list(vec![lit("a")], true), &schema), None);
        assert_eq!(BitmapFilter::of(&col("app_id").eq(lit("x")), &schema), None, "app_id has no bitmap");
        assert_eq!(BitmapFilter::of(&col("event_type").eq(lit(3)), &schema), None);
        assert_eq!(BitmapFilter::of(&col("event_type").gt(lit("a")), &schema), None);
    }

    #[test]
    fn block_masks_cover_exactly_the_selected_rows() {
        let selection: RoaringBitmap = [3u32, 10, 11, 25].into_iter().collect();
        let mask = block_mask(&selection, 10, 10);
        let set: Vec<usize> = (0..mask.len()).filter(|&i| mask.value(i)).collect();
        assert_eq!(set, vec![0, 1]);
    }
}
