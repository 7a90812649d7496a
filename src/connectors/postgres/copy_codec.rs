//! PostgreSQL's binary COPY format, both ways: tuples read from `COPY ... TO STDOUT` into
//! batch builders (the values decoded by `relational::Col::append_pg_binary`), and Arrow
//! batches encoded for `COPY ... FROM STDIN`.

use datafusion::arrow::array::*;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use crate::connectors::relational::{
    display_strings, pg_numeric_from_i128, pg_numeric_from_text, timestamp, BatchBuilder, ValueError,
    PG_EPOCH_DAYS, PG_EPOCH_MICROS,
};
use crate::connectors::ConnectorError;

const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// The header of a COPY stream (signature, flags, extension length) is this long.
const HEADER_LEN: usize = 19;

/// The header a binary COPY into the server starts with: no flags, no extension.
pub(super) fn header() -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(COPY_SIGNATURE);
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out
}

/// The trailer that ends a binary COPY (a tuple of -1 fields).
pub(super) const TRAILER: [u8; 2] = (-1i16).to_be_bytes();

/// Where the tuples start in `buf`, a COPY stream from the server: `None` until the whole
/// header (with its extension) is in.
pub(super) fn parse_header(buf: &[u8]) -> Result<Option<usize>, ConnectorError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if &buf[..11] != COPY_SIGNATURE {
        return Err(ConnectorError::permanent("unexpected COPY data from the server"));
    }
    let ext = u32::from_be_bytes([buf[15], buf[16], buf[17], buf[18]]) as usize;
    if buf.len() < HEADER_LEN + ext {
        return Ok(None);
    }
    Ok(Some(HEADER_LEN + ext))
}

/// Reads the tuple at `pos` into `fields` (ranges, `None` for NULL), if it is complete:
/// `Some((next, true))`, or `Some((next, false))` for the trailer.
pub(super) fn next_tuple(
    buf: &[u8],
    mut pos: usize,
    fields: &mut Fields,
) -> Result<Option<(usize, bool)>, ConnectorError> {
    if buf.len() < pos + 2 {
        return Ok(None);
    }
    let n = i16::from_be_bytes([buf[pos], buf[pos + 1]]);
    pos += 2;
    if n == -1 {
        return Ok(Some((pos, false)));
    }
    fields.clear();
    for _ in 0..n {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]);
        pos += 4;
        if len < 0 {
            fields.push(None);
            continue;
        }
        let end = pos + len as usize;
        if buf.len() < end {
            return Ok(None);
        }
        fields.push(Some((pos, end)));
        pos = end;
    }
    Ok(Some((pos, true)))
}

pub(super) type Fields = Vec<Option<(usize, usize)>>;

pub(super) fn decode_row(
    buf: &[u8],
    fields: &[Option<(usize, usize)>],
    builder: &mut BatchBuilder,
) -> Result<(), ConnectorError> {
    if fields.len() != builder.cols.len() {
        return Err(ConnectorError::permanent(format!(
            "the server sent {} columns, expected {}",
            fields.len(),
            builder.cols.len()
        )));
    }
    for (i, f) in fields.iter().enumerate() {
        let col = &mut builder.cols[i];
        match f {
            None => col.append_null(),
            Some((a, b)) => {
                if let Err(why) = col.append_pg_binary(&buf[*a..*b]) {
                    return Err(builder.value_error(i, why));
                }
            }
        }
    }
    builder.rows += 1;
    Ok(())
}

/// How a column is written: its PostgreSQL type, and the Arrow type it is cast to first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    Numeric,
    Text,
    Bytea,
    Date,
    Time,
    Ts,
}

/// The PostgreSQL column type for an Arrow type, and how values are sent.
pub fn pg_type_for(dt: &DataType) -> (String, Wire) {
    match dt {
        DataType::Boolean => ("boolean".into(), Wire::Bool),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => ("smallint".into(), Wire::I16),
        DataType::Int32 | DataType::UInt16 => ("integer".into(), Wire::I32),
        DataType::Int64 | DataType::UInt32 => ("bigint".into(), Wire::I64),
        DataType::UInt64 => ("numeric(20,0)".into(), Wire::Numeric),
        DataType::Float16 | DataType::Float32 => ("real".into(), Wire::F32),
        DataType::Float64 => ("double precision".into(), Wire::F64),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) if *s >= 0 => {
            (format!("numeric({p},{s})"), Wire::Numeric)
        }
        DataType::Decimal128(..) | DataType::Decimal256(..) => ("numeric".into(), Wire::Numeric),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            ("bytea".into(), Wire::Bytea)
        }
        DataType::Date32 | DataType::Date64 => ("date".into(), Wire::Date),
        DataType::Time32(_) | DataType::Time64(_) => ("time".into(), Wire::Time),
        DataType::Timestamp(_, None) => ("timestamp".into(), Wire::Ts),
        DataType::Timestamp(_, Some(_)) => ("timestamptz".into(), Wire::Ts),
        _ => ("text".into(), Wire::Text),
    }
}

/// `array` as the Arrow type its wire form is encoded from. Decimals stay decimals (encoded
/// exactly from their integers), strings and bytes may stay views.
fn normalize(array: &ArrayRef, wire: Wire) -> Result<ArrayRef, ArrowError> {
    let target = match (wire, array.data_type()) {
        (Wire::Numeric, DataType::Decimal128(_, s)) if *s >= 0 => return Ok(array.clone()),
        (Wire::Text, DataType::Utf8View) | (Wire::Bytea, DataType::BinaryView) => return Ok(array.clone()),
        (Wire::Bool, _) => DataType::Boolean,
        (Wire::I16, _) => DataType::Int16,
        (Wire::I32, _) => DataType::Int32,
        (Wire::I64, _) => DataType::Int64,
        (Wire::F32, _) => DataType::Float32,
        (Wire::F64, _) => DataType::Float64,
        (Wire::Numeric | Wire::Text, _) => DataType::Utf8,
        (Wire::Bytea, _) => DataType::Binary,
        (Wire::Date, _) => DataType::Date32,
        (Wire::Time, _) => DataType::Time64(TimeUnit::Microsecond),
        (Wire::Ts, DataType::Timestamp(_, tz)) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        (Wire::Ts, _) => timestamp(false),
    };
    if array.data_type() == &target {
        return Ok(array.clone());
    }
    match cast(array, &target) {
        Ok(a) => Ok(a),
        // Anything else is written in Arrow's display form.
        Err(_) if target == DataType::Utf8 => display_strings(array),
        Err(e) => Err(e),
    }
}

/// A normalized column, downcast once per batch.
enum Typed<'a> {
    Bool(&'a BooleanArray),
    I16(&'a Int16Array),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Decimal(&'a Decimal128Array, i8),
    /// Numeric values as decimal text.
    NumericText(&'a StringArray),
    Text(&'a StringArray),
    TextView(&'a StringViewArray),
    Bytea(&'a BinaryArray),
    ByteaView(&'a BinaryViewArray),
    Date(&'a Date32Array),
    Time(&'a Time64MicrosecondArray),
    Ts(&'a TimestampMicrosecondArray),
}

impl<'a> Typed<'a> {
    fn of(a: &'a ArrayRef, wire: Wire) -> Typed<'a> {
        match (wire, a.data_type()) {
            (Wire::Bool, _) => Typed::Bool(a.as_boolean()),
            (Wire::I16, _) => Typed::I16(a.as_primitive()),
            (Wire::I32, _) => Typed::I32(a.as_primitive()),
            (Wire::I64, _) => Typed::I64(a.as_primitive()),
            (Wire::F32, _) => Typed::F32(a.as_primitive()),
            (Wire::F64, _) => Typed::F64(a.as_primitive()),
            (Wire::Numeric, DataType::Decimal128(_, s)) => Typed::Decimal(a.as_primitive(), *s),
            (Wire::Numeric, _) => Typed::NumericText(a.as_string()),
            (Wire::Text, DataType::Utf8View) => Typed::TextView(a.as_string_view()),
            (Wire::Text, _) => Typed::Text(a.as_string()),
            (Wire::Bytea, DataType::BinaryView) => Typed::ByteaView(a.as_binary_view()),
            (Wire::Bytea, _) => Typed::Bytea(a.as_binary()),
            (Wire::Date, _) => Typed::Date(a.as_primitive()),
            (Wire::Time, _) => Typed::Time(a.as_primitive()),
            (Wire::Ts, _) => Typed::Ts(a.as_primitive()),
        }
    }

    /// Appends the value at `row` (not null) as a length-prefixed COPY field.
    fn encode(&self, row: usize, out: &mut Vec<u8>) -> Result<(), ValueError> {
        fn field(out: &mut Vec<u8>, bytes: &[u8]) {
            out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        match self {
            Typed::Bool(a) => field(out, &[u8::from(a.value(row))]),
            Typed::I16(a) => field(out, &a.value(row).to_be_bytes()),
            Typed::I32(a) => field(out, &a.value(row).to_be_bytes()),
            Typed::I64(a) => field(out, &a.value(row).to_be_bytes()),
            Typed::F32(a) => field(out, &a.value(row).to_be_bytes()),
            Typed::F64(a) => field(out, &a.value(row).to_be_bytes()),
            Typed::Text(a) => field(out, a.value(row).as_bytes()),
            Typed::TextView(a) => field(out, a.value(row).as_bytes()),
            Typed::Bytea(a) => field(out, a.value(row)),
            Typed::ByteaView(a) => field(out, a.value(row)),
            Typed::Date(a) => field(out, &(a.value(row) - PG_EPOCH_DAYS).to_be_bytes()),
            Typed::Time(a) => field(out, &a.value(row).to_be_bytes()),
            Typed::Ts(a) => field(out, &(a.value(row) - PG_EPOCH_MICROS).to_be_bytes()),
            Typed::Decimal(a, scale) => numeric_field(out, |out| {
                if pg_numeric_from_i128(a.value(row), *scale, out) {
                    Ok(())
                } else {
                    pg_numeric_from_text(&a.value_as_string(row), out)
                }
            })?,
            Typed::NumericText(a) => numeric_field(out, |out| pg_numeric_from_text(a.value(row), out))?,
        }
        Ok(())
    }
}

/// Appends a `numeric` COPY field: its length prefix, filled in once `write` has written it.
fn numeric_field(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), ValueError>,
) -> Result<(), ValueError> {
    let start = out.len();
    out.extend_from_slice(&0i32.to_be_bytes());
    write(out)?;
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Appends the batch's rows in COPY binary format.
pub(super) fn encode_batch(
    batch: &RecordBatch,
    wires: &[Wire],
    out: &mut Vec<u8>,
) -> Result<(), ConnectorError> {
    let name = |i: usize| batch.schema().field(i).name().clone();
    let arrays: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(wires)
        .enumerate()
        .map(|(i, (a, w))| {
            normalize(a, *w).map_err(|e| {
                let context = format!("column {:?}: cannot write {} values", name(i), a.data_type());
                ConnectorError::permanent_from(context, e)
            })
        })
        .collect::<Result<_, _>>()?;
    let columns: Vec<Typed> = arrays.iter().zip(wires).map(|(a, w)| Typed::of(a, *w)).collect();
    let ncols = (columns.len() as i16).to_be_bytes();
    let mut nulls = Vec::with_capacity(arrays.len());
    for a in &arrays {
        nulls.push(a.logical_nulls());
    }
    for row in 0..batch.num_rows() {
        out.extend_from_slice(&ncols);
        for (i, col) in columns.iter().enumerate() {
            if nulls[i].as_ref().is_some_and(|n| n.is_null(row)) {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                continue;
            }
            col.encode(row, out)
                .map_err(|e| ConnectorError::permanent_from(format_args!("column {:?}", name(i)), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{Decimal128Type, Field, Float64Type, Int32Type, Schema};

    use super::*;

    /// `columns` encoded as a whole COPY stream, then decoded into columns of `read_as` (the
    /// types the source gives PostgreSQL's columns of the types `pg_type_for` chose).
    fn round_trip(columns: Vec<ArrayRef>, read_as: Vec<DataType>) -> Vec<ArrayRef> {
        let fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
            .collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let wires: Vec<Wire> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| pg_type_for(f.data_type()).1)
            .collect();
        let mut stream = header();
        encode_batch(&batch, &wires, &mut stream).unwrap();
        stream.extend_from_slice(&TRAILER);
        decode_stream(&stream, read_as).unwrap()
    }

    /// Decodes a whole COPY stream, checking that it ends with the trailer and nothing after.
    fn decode_stream(stream: &[u8], read_as: Vec<DataType>) -> Result<Vec<ArrayRef>, ConnectorError> {
        let fields = read_as
            .into_iter()
            .enumerate()
            .map(|(i, dt)| Field::new(format!("c{i}"), dt, true))
            .collect();
        let mut builder = BatchBuilder::new(fields, 1024);
        let mut pos = parse_header(stream)?.expect("a whole header");
        let mut tuple = Fields::new();
        loop {
            let (next, is_row) = next_tuple(stream, pos, &mut tuple)?.expect("a whole tuple");
            pos = next;
            if !is_row {
                break;
            }
            decode_row(stream, &tuple, &mut builder)?;
        }
        assert_eq!(pos, stream.len(), "bytes after the trailer");
        Ok(builder.finish()?.columns().to_vec())
    }

    fn same(columns: Vec<ArrayRef>) {
        let types = columns.iter().map(|c| c.data_type().clone()).collect();
        assert_eq!(round_trip(columns.clone(), types), columns);
    }

    #[test]
    fn booleans_and_integers_keep_their_extremes_and_nulls() {
        same(vec![
            Arc::new(BooleanArray::from(vec![
                Some(true),
                Some(false),
                None,
                Some(true),
            ])),
            Arc::new(Int16Array::from(vec![
                Some(i16::MIN),
                Some(i16::MAX),
                None,
                Some(0),
            ])),
            Arc::new(Int32Array::from(vec![
                Some(i32::MIN),
                None,
                Some(i32::MAX),
                Some(-1),
            ])),
            Arc::new(Int64Array::from(vec![
                None,
                Some(i64::MIN),
                Some(i64::MAX),
                Some(1),
            ])),
        ]);
    }

    #[test]
    fn narrower_and_unsigned_integers_are_widened() {
        let out = round_trip(
            vec![
                Arc::new(Int8Array::from(vec![Some(i8::MIN), None, Some(i8::MAX)])),
                Arc::new(UInt16Array::from(vec![Some(u16::MAX), Some(0), None])),
                Arc::new(UInt32Array::from(vec![Some(u32::MAX), None, Some(7)])),
            ],
            vec![DataType::Int16, DataType::Int32, DataType::Int64],
        );
        let expected: Vec<ArrayRef> = vec![
            Arc::new(Int16Array::from(vec![Some(-128), None, Some(127)])),
            Arc::new(Int32Array::from(vec![Some(65_535), Some(0), None])),
            Arc::new(Int64Array::from(vec![Some(4_294_967_295), None, Some(7)])),
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn floats_keep_every_bit() {
        same(vec![
            Arc::new(Float32Array::from(vec![
                Some(f32::MIN),
                Some(f32::MAX),
                Some(f32::MIN_POSITIVE),
                Some(f32::INFINITY),
                Some(-0.0),
                None,
            ])),
            Arc::new(Float64Array::from(vec![
                Some(f64::MIN),
                Some(f64::MAX),
                Some(f64::EPSILON),
                Some(f64::NEG_INFINITY),
                None,
                Some(0.1),
            ])),
        ]);
        let nan = round_trip(
            vec![Arc::new(Float64Array::from(vec![f64::NAN]))],
            vec![DataType::Float64],
        );
        assert!(nan[0].as_primitive::<Float64Type>().value(0).is_nan());
    }

    #[test]
    fn decimals_are_exact_at_every_scale() {
        let widest = 10i128.pow(38) - 1;
        let decimal = |values: Vec<Option<i128>>, p: u8, s: i8| -> ArrayRef {
            Arc::new(
                Decimal128Array::from(values)
                    .with_precision_and_scale(p, s)
                    .unwrap(),
            )
        };
        same(vec![
            decimal(vec![Some(widest), Some(-widest), Some(0), None, Some(1)], 38, 0),
            decimal(
                vec![Some(123_400), Some(-5), None, Some(widest), Some(10_000)],
                38,
                4,
            ),
            decimal(vec![Some(1), Some(-99_999), Some(100_000), None, Some(0)], 10, 5),
            decimal(vec![Some(widest), Some(-1), None, Some(0), Some(12)], 38, 38),
        ]);
    }

    #[test]
    fn unsigned_64_bit_integers_go_as_numeric() {
        let out = round_trip(
            vec![Arc::new(UInt64Array::from(vec![Some(u64::MAX), Some(0), None]))],
            vec![DataType::Decimal128(20, 0)],
        );
        let expected = Decimal128Array::from(vec![Some(u64::MAX as i128), Some(0), None])
            .with_precision_and_scale(20, 0)
            .unwrap();
        assert_eq!(out[0].as_primitive::<Decimal128Type>(), &expected);
    }

    #[test]
    fn text_and_bytes_round_trip_from_plain_and_view_arrays() {
        let text = vec![
            Some(""),
            Some("héllo, wörld"),
            None,
            Some("a\"b\nc\t\\"),
            Some("日本"),
        ];
        let bytes: Vec<Option<&[u8]>> = vec![
            Some(b""),
            Some(&[0, 255, 1]),
            None,
            Some(b"\\x00"),
            Some(&[0; 300]),
        ];
        let out = round_trip(
            vec![
                Arc::new(StringArray::from(text.clone())),
                Arc::new(StringViewArray::from(text.clone())),
                Arc::new(BinaryArray::from(bytes.clone())),
                Arc::new(BinaryViewArray::from(bytes.clone())),
            ],
            vec![DataType::Utf8, DataType::Utf8, DataType::Binary, DataType::Binary],
        );
        let expected_text: ArrayRef = Arc::new(StringArray::from(text));
        let expected_bytes: ArrayRef = Arc::new(BinaryArray::from(bytes));
        assert_eq!(
            out,
            vec![
                expected_text.clone(),
                expected_text,
                expected_bytes.clone(),
                expected_bytes
            ]
        );
    }

    #[test]
    fn dates_times_and_timestamps_move_between_epochs() {
        let first_day = -719_162; // 0001-01-01
        let last_day = 2_932_896; // 9999-12-31
        let last_micro_of_day = 86_400_000_000 - 1;
        same(vec![
            Arc::new(Date32Array::from(vec![
                Some(0),
                Some(PG_EPOCH_DAYS),
                Some(first_day),
                Some(last_day),
                None,
            ])),
            Arc::new(Time64MicrosecondArray::from(vec![
                Some(0),
                Some(last_micro_of_day),
                None,
                Some(1),
                Some(43_200_000_000),
            ])),
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(0),
                Some(PG_EPOCH_MICROS),
                Some(-PG_EPOCH_MICROS),
                None,
                Some(253_402_300_799_999_999), // 9999-12-31 23:59:59.999999
            ])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    Some(-1),
                    None,
                    Some(1),
                    Some(PG_EPOCH_MICROS),
                    Some(0),
                ])
                .with_timezone("UTC"),
            ),
        ]);
    }

    #[test]
    fn timestamps_of_other_units_are_written_in_microseconds() {
        let out = round_trip(
            vec![Arc::new(TimestampMillisecondArray::from(vec![Some(1_500), None]))],
            vec![timestamp(false)],
        );
        let expected: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![Some(1_500_000), None]));
        assert_eq!(out, vec![expected]);
    }

    #[test]
    fn a_batch_without_rows_is_a_header_and_a_trailer() {
        let out = round_trip(
            vec![Arc::new(Int32Array::from(Vec::<i32>::new()))],
            vec![DataType::Int32],
        );
        assert_eq!(out[0].len(), 0);
        let mut stream = header();
        stream.extend_from_slice(&TRAILER);
        assert_eq!(stream.len(), HEADER_LEN + 2);
    }

    #[test]
    fn partial_input_asks_for_more_at_every_cut() {
        let batch_columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), None])),
            Arc::new(StringArray::from(vec![Some("abc"), Some("")])),
        ];
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]);
        let batch = RecordBatch::try_new(Arc::new(schema), batch_columns).unwrap();
        let mut tuples = Vec::new();
        encode_batch(&batch, &[Wire::I64, Wire::Text], &mut tuples).unwrap();
        let first_tuple_len = 2 + (4 + 8) + (4 + 3);
        let mut fields = Fields::new();
        for cut in 0..first_tuple_len {
            assert_eq!(
                next_tuple(&tuples[..cut], 0, &mut fields).unwrap(),
                None,
                "cut at {cut}"
            );
        }
        assert_eq!(
            next_tuple(&tuples, 0, &mut fields).unwrap(),
            Some((first_tuple_len, true))
        );
        assert_eq!(fields, vec![Some((6, 14)), Some((18, 21))]);
        let stream = header();
        for cut in 0..HEADER_LEN {
            assert_eq!(parse_header(&stream[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(parse_header(&stream).unwrap(), Some(HEADER_LEN));
    }

    #[test]
    fn a_header_extension_is_skipped() {
        let mut stream = COPY_SIGNATURE.to_vec();
        stream.extend_from_slice(&0i32.to_be_bytes());
        stream.extend_from_slice(&3u32.to_be_bytes());
        stream.extend_from_slice(b"ext");
        assert_eq!(parse_header(&stream[..HEADER_LEN + 2]).unwrap(), None);
        assert_eq!(parse_header(&stream).unwrap(), Some(HEADER_LEN + 3));
    }

    #[test]
    fn foreign_data_and_wrong_widths_are_refused() {
        let not_copy = b"PGCOPY\nnot really a copy stream";
        assert_eq!(
            parse_header(not_copy).unwrap_err().message,
            "unexpected COPY data from the server"
        );
        // One tuple of two fields where one column is expected.
        let mut stream = header();
        stream.extend_from_slice(&2i16.to_be_bytes());
        for _ in 0..2 {
            stream.extend_from_slice(&4i32.to_be_bytes());
            stream.extend_from_slice(&7i32.to_be_bytes());
        }
        stream.extend_from_slice(&TRAILER);
        let err = decode_stream(&stream, vec![DataType::Int32]).unwrap_err();
        assert_eq!(err.message, "the server sent 2 columns, expected 1");
        // A field of the wrong length for its type names the column.
        let mut stream = header();
        stream.extend_from_slice(&1i16.to_be_bytes());
        stream.extend_from_slice(&2i32.to_be_bytes());
        stream.extend_from_slice(&[0, 1]);
        stream.extend_from_slice(&TRAILER);
        let err = decode_stream(&stream, vec![DataType::Int32]).unwrap_err();
        assert_eq!(err.message, "column \"c0\": expected 4 bytes, got 2");
    }

    #[test]
    fn infinite_dates_and_timestamps_are_refused() {
        for (value, dt, why) in [
            (
                i32::MAX.to_be_bytes().to_vec(),
                DataType::Date32,
                "an infinite date cannot be carried",
            ),
            (
                i64::MIN.to_be_bytes().to_vec(),
                timestamp(true),
                "an infinite timestamp cannot be carried",
            ),
        ] {
            let mut stream = header();
            stream.extend_from_slice(&1i16.to_be_bytes());
            stream.extend_from_slice(&(value.len() as i32).to_be_bytes());
            stream.extend_from_slice(&value);
            stream.extend_from_slice(&TRAILER);
            let err = decode_stream(&stream, vec![dt]).unwrap_err();
            assert_eq!(err.message, format!("column \"c0\": {why}"));
        }
    }

    #[test]
    fn values_without_a_cast_are_written_in_their_display_form() {
        let list = datafusion::arrow::array::ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
        ]);
        let out = round_trip(vec![Arc::new(list)], vec![DataType::Utf8]);
        let expected: ArrayRef = Arc::new(StringArray::from(vec![Some("[1, 2]"), None]));
        assert_eq!(out, vec![expected]);
    }
}
