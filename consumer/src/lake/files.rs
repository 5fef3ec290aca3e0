//! A segment's messages → Parquet (or gzip NDJSON) files, one per `date=/hour=` directory, plus the letters of the
//! messages that could not be decoded. Pure CPU work, run off the async runtime; the same messages and reader schema always
//! give byte-identical files, which is what lets a redone segment overwrite its earlier copy harmlessly.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::types::Value;
use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rdkafka::message::Message;

use super::columns::{ColumnError, Columns};
use super::layout::hour_dir;
use super::settings::{Compression, Format};
use crate::decode::{DecodeError, ValueDecoder, writer_id};
use crate::dlq::{ErrorClass, Letter};
use crate::registry::RegistryError;
use crate::source::Received;
use crate::verdict::{Failure, Verdict, verdict};

/// The schema a stream's files are written with.
#[derive(Clone)]
pub struct FileSchema {
    /// Registry id, when the reader came from the registry.
    pub id: Option<u32>,
    /// The Avro reader schema.
    pub schema: Arc<Schema>,
    /// Its columns.
    pub columns: Arc<Columns>,
    /// Index of the field whose time names the Hive directory, if any.
    pub partition_field: Option<usize>,
}

impl FileSchema {
    /// The file schema of `schema`, partitioned by its field `partition_by` (when present).
    pub fn new(
        id: Option<u32>,
        schema: Arc<Schema>,
        partition_by: Option<&str>,
    ) -> Result<Self, ColumnError> {
        let columns = Columns::for_schema(&schema)?;
        let partition_field = match (schema.as_ref(), partition_by) {
            (Schema::Record(r), Some(name)) => r.fields.iter().position(|f| f.name == name),
            _ => None,
        };
        Ok(Self {
            id,
            schema,
            columns: Arc::new(columns),
            partition_field,
        })
    }
}

/// How a segment's rows are written: the file format, and Parquet's codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct Encoding {
    /// Parquet or NDJSON.
    pub format: Format,
    /// Parquet's codec (NDJSON is always gzip).
    pub compression: Compression,
}

impl Encoding {
    /// The bytes of a file holding `batch`.
    fn bytes(self, batch: &RecordBatch) -> Result<bytes::Bytes, ColumnError> {
        match self.format {
            Format::Parquet => parquet_bytes(batch, self.compression),
            Format::Ndjson => ndjson_gz_bytes(batch),
        }
    }
}

/// One file's contents, before it is published.
#[derive(Debug)]
pub struct File {
    /// Its `date=…/hour=…` directory.
    pub hour: String,
    /// The file's bytes.
    pub bytes: bytes::Bytes,
    /// Rows in it.
    pub rows: usize,
}

/// What a segment became.
#[derive(Debug, Default)]
pub struct Built {
    /// Its files, by directory.
    pub files: Vec<File>,
    /// Messages (by index in the segment) that go to the DLQ instead.
    pub letters: Vec<(usize, Letter)>,
}

/// Builds the files of `messages`. `writers` holds the writer schema of every framed message (or the registry's
/// reason why it has none).
pub fn build(
    messages: &[Received],
    writers: &HashMap<u32, Result<Arc<Schema>, RegistryError>>,
    target: &FileSchema,
    encoding: Encoding,
) -> Result<Built, ColumnError> {
    let mut built = Built::default();
    let mut decoders: Decoders<'_> = HashMap::new();
    // Keyed by the hour since the epoch: the directory name is formatted once per file, not once per row.
    let mut rows: BTreeMap<Option<i64>, Vec<(usize, Value)>> = BTreeMap::new();
    for (i, r) in messages.iter().enumerate() {
        let decoded = decode_one(r.message.payload(), writers, target, &mut decoders);
        match decoded {
            Ok(value) => {
                let hour = target
                    .partition_field
                    .and_then(|f| millis(&value, f))
                    .map(|ms| ms.div_euclid(HOUR_MS));
                rows.entry(hour).or_default().push((i, value));
            }
            Err(refused) => built.letters.push((i, refused.letter())),
        }
    }
    for (hour, group) in rows {
        let (batch, bad) = checked(&target.columns, group)?;
        built.letters.extend(bad);
        let Some(batch) = batch else {
            continue;
        };
        let bytes = encoding.bytes(&batch)?;
        built.files.push(File {
            hour: hour_dir(hour.map(|h| h * HOUR_MS)),
            bytes,
            rows: batch.num_rows(),
        });
    }
    built.letters.sort_by_key(|(i, _)| *i);
    Ok(built)
}

const HOUR_MS: i64 = 3_600_000;

type Decoders<'w> = HashMap<u32, Result<ValueDecoder<'w>, DecodeError>>;

fn decode_one<'w>(
    payload: Option<&[u8]>,
    writers: &'w HashMap<u32, Result<Arc<Schema>, RegistryError>>,
    target: &'w FileSchema,
    decoders: &mut Decoders<'w>,
) -> Result<Value, Refused> {
    let id = writer_id(payload)?;
    let writer = match writers.get(&id) {
        Some(Ok(w)) => w,
        Some(Err(e)) => return Err(Refused::Failure(Failure::Registry(e.clone()))),
        None => return Err(Refused::Missing(id)),
    };
    let decoder = decoders
        .entry(id)
        .or_insert_with(|| ValueDecoder::new(id, writer, &target.schema, target.id));
    match decoder {
        Ok(d) => Ok(d.decode(payload.unwrap_or_default())?),
        Err(e) => Err(e.clone().into()),
    }
}

/// Why a message did not become a row.
enum Refused {
    Failure(Failure),
    /// No writer schema was looked up for it (a bug upstream; retried rather than dead-lettered).
    Missing(u32),
}

impl From<Failure> for Refused {
    fn from(f: Failure) -> Self {
        Refused::Failure(f)
    }
}

impl From<DecodeError> for Refused {
    fn from(e: DecodeError) -> Self {
        Refused::Failure(Failure::Decode(e))
    }
}

impl Refused {
    fn letter(self) -> Letter {
        match self {
            Refused::Failure(f) => {
                let class = match verdict(&f) {
                    Verdict::DeadLetter(class) => class,
                    // Only decode and unknown-schema failures reach here; both dead-letter.
                    Verdict::Retry => ErrorClass::Undecodable,
                };
                Letter {
                    class,
                    message: f.to_string(),
                }
            }
            Refused::Missing(id) => Letter {
                class: ErrorClass::UnknownSchema,
                message: format!("schema id {id} was not looked up"),
            },
        }
    }
}

/// Something about the message at this index of the segment.
type Indexed<T> = (usize, T);

/// The batch of a group's rows, without those whose values do not fit their columns (a value the reader schema
/// allows always does; this keeps one odd row from failing the whole file). Built once when every row fits.
fn checked(
    columns: &Columns,
    group: Vec<(usize, Value)>,
) -> Result<(Option<RecordBatch>, Vec<Indexed<Letter>>), ColumnError> {
    let all: Vec<&Value> = group.iter().map(|(_, v)| v).collect();
    if let Ok(batch) = columns.batch(&all) {
        return Ok((Some(batch), Vec::new()));
    }
    let mut kept = Vec::new();
    let mut bad = Vec::new();
    for (i, v) in &group {
        match columns.batch(&[v]) {
            Ok(_) => kept.push(v),
            Err(e) => bad.push((
                *i,
                Letter {
                    class: ErrorClass::Unrepresentable,
                    message: e.to_string(),
                },
            )),
        }
    }
    if kept.is_empty() {
        return Ok((None, bad));
    }
    Ok((Some(columns.batch(&kept)?), bad))
}

/// The partition timestamp of a record, in milliseconds.
fn millis(record: &Value, field: usize) -> Option<i64> {
    let Value::Record(fields) = record else {
        return None;
    };
    let mut v = &fields.get(field)?.1;
    while let Value::Union(_, inner) = v {
        v = inner;
    }
    match v {
        Value::TimestampMillis(t) | Value::LocalTimestampMillis(t) | Value::Long(t) => Some(*t),
        Value::TimestampMicros(t) | Value::LocalTimestampMicros(t) => Some(t.div_euclid(1_000)),
        Value::TimestampNanos(t) | Value::LocalTimestampNanos(t) => Some(t.div_euclid(1_000_000)),
        Value::Date(d) => Some(i64::from(*d) * 86_400_000),
        _ => None,
    }
}

pub(super) fn parquet_bytes(
    batch: &RecordBatch,
    compression: Compression,
) -> Result<bytes::Bytes, ColumnError> {
    let codec = match compression {
        Compression::Zstd => ParquetCompression::ZSTD(ZstdLevel::default()),
        Compression::Snappy => ParquetCompression::SNAPPY,
        Compression::None => ParquetCompression::UNCOMPRESSED,
    };
    let props = WriterProperties::builder().set_compression(codec).build();
    let parquet = |e: parquet::errors::ParquetError| ColumnError::Schema(format!("parquet: {e}"));
    let mut writer =
        ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).map_err(parquet)?;
    writer.write(batch).map_err(parquet)?;
    let out = writer.into_inner().map_err(parquet)?;
    Ok(bytes::Bytes::from(out))
}

/// Writes a UUID column (16 bytes, Arrow's canonical `arrow.uuid`) as the text every reader expects, not as hex.
#[derive(Debug)]
struct UuidsAsText;

impl arrow_json::EncoderFactory for UuidsAsText {
    fn make_default_encoder<'a>(
        &self,
        field: &'a arrow_schema::FieldRef,
        array: &'a dyn arrow_array::Array,
        _options: &'a arrow_json::writer::EncoderOptions,
    ) -> Result<Option<arrow_json::writer::NullableEncoder<'a>>, arrow_schema::ArrowError> {
        use arrow_array::cast::AsArray as _;
        let is_uuid = field.extension_type_name() == Some("arrow.uuid")
            && matches!(
                array.data_type(),
                arrow_schema::DataType::FixedSizeBinary(16)
            );
        if !is_uuid {
            return Ok(None);
        }
        let values = array.as_fixed_size_binary();
        Ok(Some(arrow_json::writer::NullableEncoder::new(
            Box::new(UuidEncoder(values)),
            arrow_array::Array::nulls(values).cloned(),
        )))
    }
}

struct UuidEncoder<'a>(&'a arrow_array::FixedSizeBinaryArray);

impl arrow_json::writer::Encoder for UuidEncoder<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let text = uuid::Uuid::from_slice(self.0.value(idx)).unwrap_or_default();
        out.push(b'"');
        out.extend_from_slice(
            text.hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .as_bytes(),
        );
        out.push(b'"');
    }
}

/// One JSON object per row, columns in the schema's order, nulls written out (so every line has every key), the
/// whole gzip-compressed. arrow-json writes timestamps as RFC 3339 strings, maps as objects, binary as hex, and UUIDs are text;
/// gzip's header carries no time, so the same batch always gives the same bytes.
pub(super) fn ndjson_gz_bytes(batch: &RecordBatch) -> Result<bytes::Bytes, ColumnError> {
    let json = |e: arrow_schema::ArrowError| ColumnError::Schema(format!("json: {e}"));
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .with_encoder_factory(std::sync::Arc::new(UuidsAsText))
        .build::<_, arrow_json::writer::LineDelimited>(gz);
    writer.write(batch).map_err(json)?;
    writer.finish().map_err(json)?;
    let out = writer
        .into_inner()
        .finish()
        .map_err(|e| ColumnError::Schema(format!("gzip: {e}")))?;
    Ok(bytes::Bytes::from(out))
}
