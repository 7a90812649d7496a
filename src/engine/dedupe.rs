//! The dedupe idiom, planned as an aggregate.
//!
//! Staging models keep one row per key with
//! `SELECT ... FROM (SELECT *, row_number() OVER (PARTITION BY k ORDER BY o) AS rn FROM t) WHERE rn = 1`.
//! DataFusion runs that as written: every row is hash-partitioned, fully sorted by `(k, o)`,
//! numbered, then all but the first of each key dropped — its slowest common pattern. The same
//! rows come from a hash aggregate that keeps, per key, the first row in `o` order: no sort,
//! and only one row per key held. [`DedupeRule`] rewrites the plan into that, and
//! [`FirstRow`] is the aggregate.
//!
//! Exactly the same rows: the partition keys become the grouping keys (NULL keys group together
//! in both), rows are compared in `ORDER BY` order with its directions and NULL placement
//! (arrow's row format, which sorts the way DataFusion sorts), and a whole row is kept — never
//! columns of different rows. Where rows tie in `ORDER BY`, `row_number()` numbers them in no
//! defined order and so does this: either way one of the tied rows is kept, whole. `rn` reads 1.
//! Anything else (another window function beside it, `rn <= 2`, a key that is an expression, a
//! column type the row format cannot hold) is left as written.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, BooleanArray, StructArray,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::arrow::row::{OwnedRow, Row, RowConverter, Rows, SortField};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::{AggregateFunction, WindowFunction};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{conjunction, split_conjunction_owned};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, BinaryExpr, EmitTo, Expr, ExprSchemable, GroupsAccumulator,
    LogicalPlan, Operator, Signature, Volatility, WindowFunctionDefinition,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

const NONE: u32 = u32::MAX;

/// `first_row(payload..., order...)`: per group, the payload of the row that comes first in
/// the order given by the order arguments and their sort options; returned as a struct with
/// fields `c0`, `c1`, ... (one per payload argument).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FirstRow {
    signature: Signature,
    payload: usize,
    /// (descending, nulls first) of each order argument.
    orders: Vec<(bool, bool)>,
}

impl FirstRow {
    pub fn new(payload: usize, orders: Vec<(bool, bool)>) -> Self {
        FirstRow {
            signature: Signature::variadic_any(Volatility::Immutable),
            payload,
            orders,
        }
    }

    fn sort_fields(&self, arg_types: &[DataType]) -> (Vec<SortField>, Vec<SortField>) {
        let payload = arg_types[..self.payload]
            .iter()
            .map(|t| SortField::new(t.clone()))
            .collect();
        let order = arg_types[self.payload..]
            .iter()
            .zip(&self.orders)
            .map(|(t, (descending, nulls_first))| {
                SortField::new_with_options(
                    t.clone(),
                    SortOptions {
                        descending: *descending,
                        nulls_first: *nulls_first,
                    },
                )
            })
            .collect();
        (payload, order)
    }

    fn struct_fields(&self, arg_types: &[DataType]) -> Fields {
        arg_types[..self.payload]
            .iter()
            .enumerate()
            .map(|(i, t)| Field::new(format!("c{i}"), t.clone(), true))
            .collect()
    }

    fn converters(&self, arg_types: &[DataType]) -> Result<(RowConverter, RowConverter)> {
        let (payload, order) = self.sort_fields(arg_types);
        Ok((RowConverter::new(payload)?, RowConverter::new(order)?))
    }
}

fn arg_types(args: &AccumulatorArgs) -> Vec<DataType> {
    args.expr_fields.iter().map(|f| f.data_type().clone()).collect()
}

impl AggregateUDFImpl for FirstRow {
    fn name(&self) -> &str {
        "sluice_first_row"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(self.struct_fields(arg_types)))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let types = arg_types(&args);
        let (payload, order) = self.converters(&types)?;
        Ok(Box::new(FirstRowAccumulator {
            fields: self.struct_fields(&types),
            split: self.payload,
            payload,
            order,
            best: None,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format!("{}[order]", args.name),
                DataType::Binary,
                true,
            )),
            Arc::new(Field::new(format!("{}[row]", args.name), DataType::Binary, true)),
        ])
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        let types = arg_types(&args);
        let (payload, order) = self.converters(&types)?;
        Ok(Box::new(FirstRowGroups {
            fields: self.struct_fields(&types),
            split: self.payload,
            payload,
            order,
            winners: Vec::new(),
            live: 0,
            chunks: Vec::new(),
            retained: 0,
            candidate: Vec::new(),
        }))
    }
}

/// The winners so far of a batch (or of a compaction): their order keys and their rows.
struct Chunk {
    order: Rows,
    payload: Rows,
    /// How many groups still point here.
    live: usize,
}

/// Per group, the row that comes first. Winners are kept in arrow's row format, a chunk per
/// batch holding only that batch's winners; chunks whose rows were all beaten are dropped, and
/// when beaten rows outnumber live ones the winners are copied into one fresh chunk.
struct FirstRowGroups {
    fields: Fields,
    split: usize,
    payload: RowConverter,
    order: RowConverter,
    /// Per group: (chunk, row) of its winner, or (NONE, NONE).
    winners: Vec<(u32, u32)>,
    /// Groups that have a winner (kept as it changes: counting them per batch cost a pass over
    /// every group for every batch).
    live: usize,
    chunks: Vec<Option<Chunk>>,
    /// Rows held in all chunks.
    retained: usize,
    /// Per group, this batch's best row so far (NONE: none); reset after each batch.
    candidate: Vec<u32>,
}

impl FirstRowGroups {
    fn order_of(&self, winner: (u32, u32)) -> Option<Row<'_>> {
        let chunk = self.chunks.get(winner.0 as usize)?.as_ref()?;
        Some(chunk.order.row(winner.1 as usize))
    }

    fn payload_of(&self, winner: (u32, u32)) -> Option<Row<'_>> {
        let chunk = self.chunks.get(winner.0 as usize)?.as_ref()?;
        Some(chunk.payload.row(winner.1 as usize))
    }

    /// Takes in the rows of one batch: `order(i)` and `payload(i)` give row `i` (`None`: skip).
    fn absorb<'a>(
        &mut self,
        group_indices: &[usize],
        total_num_groups: usize,
        order: impl Fn(usize) -> Option<Row<'a>>,
        payload: impl Fn(usize) -> Row<'a>,
    ) {
        self.winners.resize(total_num_groups, (NONE, NONE));
        self.candidate.resize(total_num_groups, NONE);
        let mut touched = Vec::new();
        for (i, &g) in group_indices.iter().enumerate() {
            let Some(row) = order(i) else { continue };
            let better = match self.candidate[g] {
                NONE => self.order_of(self.winners[g]).is_none_or(|best| row < best),
                c => order(c as usize).is_some_and(|best| row < best),
            };
            if better {
                if self.candidate[g] == NONE {
                    touched.push(g);
                }
                self.candidate[g] = i as u32;
            }
        }
        if touched.is_empty() {
            return;
        }
        let mut orders = self.order.empty_rows(touched.len(), 64 * touched.len());
        let mut rows = self.payload.empty_rows(touched.len(), 64 * touched.len());
        for &g in &touched {
            let i = self.candidate[g] as usize;
            if let Some(o) = order(i) {
                orders.push(o);
            }
            rows.push(payload(i));
        }
        let id = self.chunks.len() as u32;
        for (k, &g) in touched.iter().enumerate() {
            self.candidate[g] = NONE;
            let old = std::mem::replace(&mut self.winners[g], (id, k as u32));
            if old.0 == NONE {
                self.live += 1;
            }
            self.release(old.0);
        }
        self.retained += touched.len();
        self.chunks.push(Some(Chunk {
            order: orders,
            payload: rows,
            live: touched.len(),
        }));
        self.maybe_compact();
    }

    /// One row of chunk `id` is no longer a winner.
    fn release(&mut self, id: u32) {
        if let Some(slot) = self.chunks.get_mut(id as usize) {
            if let Some(chunk) = slot {
                chunk.live -= 1;
                if chunk.live == 0 {
                    self.retained -= chunk.order.num_rows();
                    *slot = None;
                }
            }
        }
    }

    fn maybe_compact(&mut self) {
        let live = self.live;
        if self.retained <= 2 * live + 65_536 {
            return;
        }
        let mut orders = self.order.empty_rows(live, 64 * live);
        let mut rows = self.payload.empty_rows(live, 64 * live);
        let mut winners = Vec::with_capacity(self.winners.len());
        let mut k = 0u32;
        for &w in &self.winners {
            match (self.order_of(w), self.payload_of(w)) {
                (Some(o), Some(p)) => {
                    orders.push(o);
                    rows.push(p);
                    winners.push((0, k));
                    k += 1;
                }
                _ => winners.push((NONE, NONE)),
            }
        }
        self.chunks = vec![Some(Chunk {
            order: orders,
            payload: rows,
            live: k as usize,
        })];
        self.retained = k as usize;
        self.live = k as usize;
        self.winners = winners;
    }

    /// Removes the first `emit_to` groups, returning their winners.
    fn take(&mut self, emit_to: EmitTo) -> Vec<(u32, u32)> {
        let taken = emit_to.take_needed(&mut self.winners);
        self.live -= taken.iter().filter(|w| w.0 != NONE).count();
        if let EmitTo::First(n) = emit_to {
            self.candidate.drain(..n.min(self.candidate.len()));
        } else {
            self.candidate.clear();
        }
        taken
    }

    /// Forgets what `taken` pointed at (after emitting it).
    fn forget(&mut self, taken: &[(u32, u32)]) {
        for w in taken {
            if w.0 != NONE {
                self.release(w.0);
            }
        }
    }
}

impl GroupsAccumulator for FirstRowGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let (payload_cols, order_cols) = values.split_at(self.split);
        let order = self.order.convert_columns(order_cols)?;
        let payload = self.payload.convert_columns(payload_cols)?;
        let keep = |i: usize| opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i));
        self.absorb(
            group_indices,
            total_num_groups,
            |i| keep(i).then(|| order.row(i)),
            |i| payload.row(i),
        );
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let taken = self.take(emit_to);
        let present: Vec<bool> = taken.iter().map(|w| w.0 != NONE).collect();
        let rows: Vec<Row<'_>> = taken.iter().filter_map(|w| self.payload_of(*w)).collect();
        let columns = self.payload.convert_rows(rows)?;
        // Groups without a row (every row filtered out) are NULL; spread the rows over them.
        let columns = if present.iter().all(|p| *p) {
            columns
        } else {
            spread(&columns, &present)?
        };
        let nulls = NullBuffer::from(present);
        let array = StructArray::try_new(self.fields.clone(), columns, Some(nulls))?;
        self.forget(&taken);
        Ok(Arc::new(array))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let taken = self.take(emit_to);
        let order = binary(taken.iter().map(|w| self.order_of(*w).map(|r| r.data())));
        let rows = binary(taken.iter().map(|w| self.payload_of(*w).map(|r| r.data())));
        self.forget(&taken);
        Ok(vec![Arc::new(order), Arc::new(rows)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        let (order, rows) = state_arrays(values)?;
        let (order_parser, row_parser) = (self.order.parser(), self.payload.parser());
        self.absorb(
            group_indices,
            total_num_groups,
            |i| order.is_valid(i).then(|| order_parser.parse(order.value(i))),
            |i| row_parser.parse(rows.value(i)),
        );
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let (payload_cols, order_cols) = values.split_at(self.split);
        let order = self.order.convert_columns(order_cols)?;
        let payload = self.payload.convert_columns(payload_cols)?;
        // Every row is its own state: the rows' buffers become the arrays as they are (no copy
        // per row); rows the filter drops are NULL.
        let nulls =
            opt_filter.map(|f| NullBuffer::from_iter((0..f.len()).map(|i| f.is_valid(i) && f.value(i))));
        let as_state = |rows: Rows| -> Result<ArrayRef> {
            let (offsets, values, _) = rows.try_into_binary()?.into_parts();
            Ok(Arc::new(BinaryArray::try_new(offsets, values, nulls.clone())?))
        };
        Ok(vec![as_state(order)?, as_state(payload)?])
    }

    fn size(&self) -> usize {
        let chunks: usize = self
            .chunks
            .iter()
            .flatten()
            .map(|c| c.order.size() + c.payload.size())
            .sum();
        chunks
            + self.winners.capacity() * std::mem::size_of::<(u32, u32)>()
            + self.candidate.capacity() * std::mem::size_of::<u32>()
            + self.order.size()
            + self.payload.size()
    }
}

/// A binary array of these values, copied into one buffer.
fn binary<'a>(values: impl ExactSizeIterator<Item = Option<&'a [u8]>> + Clone) -> BinaryArray {
    let bytes = values.clone().flatten().map(<[u8]>::len).sum();
    let mut builder = BinaryBuilder::with_capacity(values.len(), bytes);
    for value in values {
        builder.append_option(value);
    }
    builder.finish()
}

fn state_arrays(values: &[ArrayRef]) -> Result<(&BinaryArray, &BinaryArray)> {
    let bad = || DataFusionError::Internal("sluice_first_row: unexpected state".into());
    let order = values
        .first()
        .and_then(|a| a.as_binary_opt::<i32>())
        .ok_or_else(bad)?;
    let rows = values
        .get(1)
        .and_then(|a| a.as_binary_opt::<i32>())
        .ok_or_else(bad)?;
    Ok((order, rows))
}

/// `columns` (one value per present group) spread over every group, NULL where absent.
fn spread(columns: &[ArrayRef], present: &[bool]) -> Result<Vec<ArrayRef>> {
    use datafusion::arrow::array::UInt32Array;
    let mut next = 0u32;
    let indices: UInt32Array = present
        .iter()
        .map(|p| {
            p.then(|| {
                next += 1;
                next - 1
            })
        })
        .collect();
    columns
        .iter()
        .map(|c| Ok(datafusion::arrow::compute::take(c, &indices, None)?))
        .collect()
}

/// The same, one group at a time (DataFusion uses it where it cannot group, e.g. no keys).
struct FirstRowAccumulator {
    fields: Fields,
    split: usize,
    payload: RowConverter,
    order: RowConverter,
    best: Option<(OwnedRow, OwnedRow)>,
}

impl FirstRowAccumulator {
    fn offer(&mut self, order: Row<'_>, row: Row<'_>) {
        if self.best.as_ref().is_none_or(|(o, _)| order < o.row()) {
            self.best = Some((order.owned(), row.owned()));
        }
    }
}

impl std::fmt::Debug for FirstRowAccumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirstRowAccumulator").finish()
    }
}

impl Accumulator for FirstRowAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let (payload_cols, order_cols) = values.split_at(self.split);
        let order = self.order.convert_columns(order_cols)?;
        let payload = self.payload.convert_columns(payload_cols)?;
        for i in 0..order.num_rows() {
            self.offer(order.row(i), payload.row(i));
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let Some((_, row)) = &self.best else {
            return ScalarValue::try_from(&DataType::Struct(self.fields.clone()));
        };
        let columns = self.payload.convert_rows([row.row()])?;
        let array = StructArray::try_new(self.fields.clone(), columns, None)?;
        ScalarValue::try_from_array(&array, 0)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .best
                .as_ref()
                .map_or(0, |(o, r)| o.as_ref().len() + r.as_ref().len())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(match &self.best {
            Some((o, r)) => vec![
                ScalarValue::Binary(Some(o.as_ref().to_vec())),
                ScalarValue::Binary(Some(r.as_ref().to_vec())),
            ],
            None => vec![ScalarValue::Binary(None), ScalarValue::Binary(None)],
        })
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (order, rows) = state_arrays(states)?;
        let (order_parser, row_parser) = (self.order.parser(), self.payload.parser());
        for i in 0..order.len() {
            if order.is_valid(i) {
                let (o, r) = (
                    order_parser.parse(order.value(i)),
                    row_parser.parse(rows.value(i)),
                );
                if self.best.as_ref().is_none_or(|(b, _)| o < b.row()) {
                    self.best = Some((o.owned(), r.owned()));
                }
            }
        }
        Ok(())
    }
}

/// Rewrites `Filter(rn = 1)` over `Window(row_number() OVER (PARTITION BY k ORDER BY o))` into
/// an aggregate keeping the first row of each key (see the module docs).
#[derive(Debug, Default)]
pub struct DedupeRule;

impl OptimizerRule for DedupeRule {
    fn name(&self) -> &str {
        "sluice_dedupe_row_number"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Filter(filter) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let rewritten = match filter.input.as_ref() {
            LogicalPlan::Window(window) => rewrite_dedupe(filter, window)?,
            // Columns pruned between the two: the same, under that projection.
            LogicalPlan::Projection(projection)
                if projection.expr.iter().all(|e| matches!(e, Expr::Column(_))) =>
            {
                match projection.input.as_ref() {
                    LogicalPlan::Window(window) => match rewrite_dedupe(filter, window)? {
                        Some(inner) => Some(
                            datafusion::logical_expr::LogicalPlanBuilder::from(inner)
                                .project(projection.expr.clone())?
                                .build()?,
                        ),
                        None => None,
                    },
                    _ => None,
                }
            }
            _ => None,
        };
        match rewritten {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

fn rewrite_dedupe(
    filter: &datafusion::logical_expr::Filter,
    window: &datafusion::logical_expr::Window,
) -> Result<Option<LogicalPlan>> {
    use datafusion::logical_expr::LogicalPlanBuilder;
    let [expr] = window.window_expr.as_slice() else {
        return Ok(None);
    };
    let Expr::WindowFunction(wf) = strip_alias(expr) else {
        return Ok(None);
    };
    let WindowFunction { fun, params } = wf.as_ref();
    let is_row_number = matches!(fun, WindowFunctionDefinition::WindowUDF(udf) if udf.name() == "row_number");
    if !is_row_number
        || !params.args.is_empty()
        || params.partition_by.is_empty()
        || params.filter.is_some()
        || params.distinct
        || !params.partition_by.iter().all(|e| matches!(e, Expr::Column(_)))
    {
        return Ok(None);
    }
    let input = window.input.as_ref();
    let input_fields = input.schema().fields().len();
    let (qualifier, field) = window.schema.qualified_field(input_fields);
    let rn = Column::new(qualifier.cloned(), field.name());
    // The conjunct `rn = 1`; the others stay as they are.
    let mut found = false;
    let mut rest = Vec::new();
    for conjunct in split_conjunction_owned(filter.predicate.clone()) {
        if !found && is_first(&conjunct, &rn) {
            found = true;
        } else {
            rest.push(conjunct);
        }
    }
    if !found {
        return Ok(None);
    }
    // Every column and every order key must fit arrow's row format.
    let mut types: Vec<DataType> = input
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let orders: Vec<(Expr, bool, bool)> = if params.order_by.is_empty() {
        vec![(
            Expr::Literal(ScalarValue::Boolean(Some(true)), None),
            false,
            false,
        )]
    } else {
        params
            .order_by
            .iter()
            .map(|s| (s.expr.clone(), !s.asc, s.nulls_first))
            .collect()
    };
    for (e, _, _) in &orders {
        match e.get_type(input.schema()) {
            Ok(t) => types.push(t),
            Err(_) => return Ok(None),
        }
    }
    let sort_fields: Vec<SortField> = types.iter().map(|t| SortField::new(t.clone())).collect();
    if !RowConverter::supports_fields(&sort_fields) {
        return Ok(None);
    }
    let first_row = AggregateUDF::from(FirstRow::new(
        input_fields,
        orders.iter().map(|(_, d, n)| (*d, *n)).collect(),
    ));
    let mut args: Vec<Expr> = input.schema().columns().into_iter().map(Expr::Column).collect();
    args.extend(orders.into_iter().map(|(e, _, _)| e));
    let kept = "__sluice_first_row";
    let aggregate = Expr::AggregateFunction(AggregateFunction::new_udf(
        Arc::new(first_row),
        args,
        false,
        None,
        vec![],
        None,
    ))
    .alias(kept);
    let aggregated = LogicalPlanBuilder::from(input.clone())
        .aggregate(params.partition_by.clone(), vec![aggregate])?
        .build()?;
    let get_field = datafusion::functions::core::get_field();
    // A key column is the group's key itself (the kept row holds the same value): passed on as
    // a column, so the result is known to be unique on it (`eager_aggregate::unique_sets`).
    let keys: HashSet<usize> = params
        .partition_by
        .iter()
        .filter_map(|e| match e {
            Expr::Column(c) => input.schema().index_of_column(c).ok(),
            _ => None,
        })
        .collect();
    let mut columns: Vec<Expr> = input
        .schema()
        .iter()
        .enumerate()
        .map(|(i, (q, f))| {
            if keys.contains(&i) {
                return Expr::Column(Column::new(q.cloned(), f.name()));
            }
            get_field
                .call(vec![
                    Expr::Column(Column::from_name(kept)),
                    Expr::Literal(ScalarValue::Utf8(Some(format!("c{i}"))), None),
                ])
                .alias_qualified(q.cloned(), f.name())
        })
        .collect();
    columns.push(
        Expr::Literal(ScalarValue::UInt64(Some(1)), None).alias_qualified(rn.relation.clone(), &rn.name),
    );
    let mut plan = LogicalPlanBuilder::from(aggregated).project(columns)?;
    if let Some(rest) = conjunction(rest) {
        plan = plan.filter(rest)?;
    }
    Ok(Some(plan.build()?))
}

/// `e` without the aliases around it.
pub(super) fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

/// Whether `e` says "`rn` is 1" (`rn = 1`, `1 = rn`, `rn <= 1`, `rn < 2`, with `rn` possibly
/// cast, the number of any integer type).
fn is_first(e: &Expr, rn: &Column) -> bool {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return false;
    };
    let column = |e: &Expr| match e {
        Expr::Column(c) => c == rn,
        Expr::Cast(c) => matches!(c.expr.as_ref(), Expr::Column(col) if col == rn),
        Expr::TryCast(c) => matches!(c.expr.as_ref(), Expr::Column(col) if col == rn),
        _ => false,
    };
    let number = |e: &Expr| match e {
        Expr::Literal(v, _) => v.cast_to(&DataType::Int64).ok().and_then(|v| match v {
            ScalarValue::Int64(n) => n,
            _ => None,
        }),
        _ => None,
    };
    match op {
        Operator::Eq => {
            (column(left) && number(right) == Some(1)) || (column(right) && number(left) == Some(1))
        }
        Operator::LtEq => column(left) && number(right) == Some(1),
        Operator::Lt => column(left) && number(right) == Some(2),
        Operator::GtEq => column(right) && number(left) == Some(1),
        Operator::Gt => column(right) && number(left) == Some(2),
        _ => false,
    }
}

/// The names of the rules this module adds (for tests that look at plans).
pub fn rule_names() -> HashSet<&'static str> {
    HashSet::from(["sluice_dedupe_row_number"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::*;

    /// With `skip_partial`, the partial aggregate gives up at once and passes every row on as
    /// its own state (`convert_to_state`), as DataFusion does when few rows share a key.
    async fn ctx_with(rule: bool, skip_partial: bool) -> SessionContext {
        let mut config = SessionConfig::new().with_target_partitions(3).with_batch_size(7);
        if skip_partial {
            let aggregate = &mut config.options_mut().execution;
            aggregate.skip_partial_aggregation_probe_rows_threshold = 0;
            aggregate.skip_partial_aggregation_probe_ratio_threshold = 0.0;
        }
        let mut state = datafusion::execution::session_state::SessionStateBuilder::new()
            .with_default_features()
            .with_config(config);
        if rule {
            state = state.with_optimizer_rule(Arc::new(DedupeRule));
        }
        let ctx = SessionContext::new_with_state(state.build());
        // Ties on `v` within a key only among identical rows; NULL keys; NULL order values.
        ctx.sql(
            "CREATE TABLE t AS VALUES
               (1, 10, 'a', 'x'), (1, 30, 'b', 'y'), (1, 30, 'b', 'y'), (1, NULL, 'n', 'z'),
               (2, 5, 'c', NULL), (NULL, 7, 'd', 'w'), (NULL, 9, 'e', 'v'), (NULL, 9, 'e', 'v'),
               (3, NULL, 'f', 'u'), (4, 1, NULL, 't')",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
        // A bigger table: many keys over many batches.
        ctx.sql(
            "CREATE TABLE big AS SELECT value % 997 AS k, (value * 7919) % 10007 AS o, value AS id
             FROM generate_series(1, 20000)",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
        ctx
    }

    async fn ctx(rule: bool) -> SessionContext {
        ctx_with(rule, false).await
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> (Vec<String>, String) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = format!("{}", df.clone().into_optimized_plan().unwrap().display_indent());
        let batches = df.collect().await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        let mut lines: Vec<String> = text.lines().skip(3).map(str::to_string).collect();
        lines.retain(|l| !l.starts_with('+'));
        lines.sort();
        (lines, plan)
    }

    #[tokio::test]
    async fn the_rewrite_gives_the_rows_row_number_gives() {
        let without = ctx(false).await;
        for (with, sql) in [ctx(true).await, ctx_with(true, true).await]
            .into_iter()
            .flat_map(|with| SQL.iter().map(move |sql| (with.clone(), *sql)))
        {
            let (got, plan) = rows(&with, sql).await;
            let (want, _) = rows(&without, sql).await;
            assert_eq!(got, want, "{sql}");
            assert!(plan.contains("sluice_first_row"), "rewritten: {sql}\n{plan}");
            assert!(!plan.contains("WindowAggr"), "{plan}");
        }
    }

    const SQL: &[&str] = &[
            "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY column1 ORDER BY column2 DESC) AS rn FROM t) WHERE rn = 1",
            "SELECT column1, column3 FROM (SELECT *, row_number() OVER (PARTITION BY column1 ORDER BY column2 ASC NULLS FIRST) AS rn FROM t) s WHERE rn = 1",
            "SELECT column1, column2 FROM (SELECT *, row_number() OVER (PARTITION BY column1 ORDER BY column2 DESC NULLS LAST, column3) AS rn FROM t) s WHERE 1 = rn AND column2 > 0",
            "WITH r AS (SELECT *, row_number() OVER (PARTITION BY column1, column4 ORDER BY column2) AS rn FROM t) SELECT * FROM r WHERE rn <= 1",
            "SELECT k, o, id FROM (SELECT *, row_number() OVER (PARTITION BY k ORDER BY o DESC, id) AS rn FROM big) WHERE rn = 1",
        ];

    #[tokio::test]
    async fn other_shapes_are_left_alone() {
        let with = ctx(true).await;
        for sql in [
            // Keeps two rows per key.
            "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY column1 ORDER BY column2) AS rn FROM t) WHERE rn <= 2",
            // No partition: one row overall is a TopK, DataFusion does it well.
            "SELECT * FROM (SELECT *, row_number() OVER (ORDER BY column2) AS rn FROM t) WHERE rn = 1",
            // Another function.
            "SELECT * FROM (SELECT *, rank() OVER (PARTITION BY column1 ORDER BY column2) AS rn FROM t) WHERE rn = 1",
            // A key that is an expression.
            "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY column1 % 2 ORDER BY column2) AS rn FROM t) WHERE rn = 1",
        ] {
            let (_, plan) = rows(&with, sql).await;
            assert!(!plan.contains("sluice_first_row"), "{sql}\n{plan}");
        }
    }
}
