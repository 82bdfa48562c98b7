//! Result batches as Loch sends them to Flight clients, from the
//! coordinator and (for direct endpoints) from executors.

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, SchemaAsIpc};
use datafusion::arrow::array::ArrayData;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::bytes::Bytes;
use tonic::Status;

/// Most bytes of Arrow data Loch puts in one Flight message: arrow-flight's
/// own target, far under the 16 MiB clients accept by default.
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

/// The bytes `array`'s rows take in an IPC message, dictionaries counted
/// as sent (their values in every row).
fn wire_bytes(array: &dyn Array) -> usize {
    if let Some(dictionary) = array.as_any_dictionary_opt() {
        let values = dictionary.values();
        let per_value = wire_bytes(values.as_ref()) / values.len().max(1);
        return array.len() * (per_value + 1);
    }
    array
        .to_data()
        .get_slice_memory_size()
        .unwrap_or_else(|_| array.get_buffer_memory_size())
}

/// `batch` cut into row ranges of at most about [`MAX_MESSAGE_BYTES`] each,
/// counting the bytes of its rows. arrow-flight's encoder counts whole
/// buffers instead, and a batch decoded from an executor's message shares
/// that message's one buffer among all its columns: the count is then many
/// times too high, and 8192-row batches went out as 550-row slivers, each
/// costing the client as much as a full one.
pub fn wire_pieces(batch: RecordBatch) -> Vec<RecordBatch> {
    let bytes: usize = batch.columns().iter().map(|c| wire_bytes(c.as_ref())).sum();
    let rows = batch.num_rows();
    let pieces = bytes.div_ceil(MAX_MESSAGE_BYTES).clamp(1, rows.max(1));
    if pieces == 1 {
        return vec![batch];
    }
    let per_piece = rows.div_ceil(pieces);
    (0..rows)
        .step_by(per_piece)
        .map(|offset| batch.slice(offset, per_piece.min(rows - offset)))
        .collect()
}

/// Result batches of `schema` as the Flight data Loch sends: each cut by
/// [`wire_pieces`], then encoded without the encoder's own cutting (which
/// over-counts shared buffers, see there). An error ends the stream as its
/// status.
pub fn flight_data(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, Status>> + Send + 'static,
) -> BoxStream<'static, Result<FlightData, Status>> {
    if schema
        .fields()
        .iter()
        .any(|f| has_dictionary(f.data_type()))
    {
        // arrow-flight sends dictionaries as their values: its encoder
        // knows every nesting of them.
        let pieces = batches.flat_map(|batch| {
            let pieces: Vec<Result<RecordBatch, FlightError>> = match batch {
                Ok(batch) => wire_pieces(batch).into_iter().map(Ok).collect(),
                Err(status) => vec![Err(FlightError::Tonic(Box::new(status)))],
            };
            futures::stream::iter(pieces)
        });
        return FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(usize::MAX)
            .build(pieces)
            .map_err(Status::from)
            .boxed();
    }
    let head = SchemaAsIpc::new(&schema, &IpcWriteOptions::default()).into();
    let mut encoder = match WireEncoder::try_new(&schema) {
        Ok(encoder) => encoder,
        Err(e) => {
            let failed = Status::from(FlightError::Arrow(e));
            return futures::stream::iter([Err(failed)]).boxed();
        }
    };
    let body = batches.flat_map(move |batch| {
        let messages: Vec<Result<FlightData, Status>> = match batch {
            Ok(batch) => wire_pieces(batch)
                .iter()
                .map(|piece| {
                    encoder
                        .encode(piece)
                        .map(|(message, _)| message)
                        .map_err(|e| Status::from(FlightError::Arrow(e)))
                })
                .collect(),
            Err(status) => vec![Err(status)],
        };
        futures::stream::iter(messages)
    });
    futures::stream::once(async move { Ok(head) })
        .chain(body)
        .boxed()
}

/// Whether `data_type` is, or has at any depth, a dictionary.
pub fn has_dictionary(data_type: &DataType) -> bool {
    match data_type {
        DataType::Dictionary(..) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => has_dictionary(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| has_dictionary(f.data_type())),
        DataType::Union(fields, _) => fields.iter().any(|(_, f)| has_dictionary(f.data_type())),
        DataType::RunEndEncoded(_, values) => has_dictionary(values.data_type()),
        _ => false,
    }
}

/// Encodes batches without dictionaries into Flight messages, each into
/// one buffer of about its own size: the IPC writer copies every Arrow
/// buffer once, straight into it. (arrow-flight's encoder grows each body
/// from an empty vector, which copied a 2 MiB body about twice more: an
/// eighth of the CPU of a server sending a scan.)
pub struct WireEncoder {
    writer: StreamWriter<Vec<u8>>,
}

impl WireEncoder {
    /// An encoder for batches of `schema` (the schema message itself is
    /// not among what it returns).
    pub fn try_new(schema: &Schema) -> Result<Self, ArrowError> {
        let mut writer = StreamWriter::try_new(Vec::new(), schema)?;
        writer.get_mut().clear();
        Ok(WireEncoder { writer })
    }

    /// `batch` as one message, and the bytes its buffer holds.
    pub fn encode(&mut self, batch: &RecordBatch) -> Result<(FlightData, usize), ArrowError> {
        *self.writer.get_mut() = Vec::with_capacity(encoded_size(batch));
        self.writer.write(batch)?;
        let written = std::mem::take(self.writer.get_mut());
        let held = written.capacity();
        // An IPC stream message: a continuation marker, the metadata's
        // length, the metadata (padded) and the body.
        let length = written
            .get(..8)
            .and_then(|prefix| prefix[4..].try_into().ok())
            .map(i32::from_le_bytes)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| 8 + n <= written.len())
            .ok_or_else(|| ArrowError::IpcError("unexpected IPC message framing".into()))?;
        let bytes = Bytes::from(written);
        let message = FlightData {
            data_header: bytes.slice(8..8 + length),
            data_body: bytes.slice(8 + length..),
            ..Default::default()
        };
        Ok((message, held))
    }
}

/// A little more than the bytes `batch` takes as an IPC message: its rows'
/// buffers, each padded, and the metadata describing them.
fn encoded_size(batch: &RecordBatch) -> usize {
    fn buffers(data: &ArrayData) -> usize {
        1 + data.buffers().len() + data.child_data().iter().map(buffers).sum::<usize>()
    }
    let (bytes, count) = batch
        .columns()
        .iter()
        .fold((0, 0), |(bytes, count), column| {
            (
                bytes + wire_bytes(column.as_ref()),
                count + buffers(&column.to_data()),
            )
        });
    bytes + count * (64 + 32) + 1024
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn batches_from_one_shared_buffer_are_cut_by_their_rows() {
        use datafusion::arrow::array::{Int64Array, StringArray};
        use datafusion::arrow::ipc::reader::StreamReader;
        use datafusion::arrow::ipc::writer::StreamWriter;
        let rows = 100_000;
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows)),
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("value {i}")),
                )),
            ],
        )
        .unwrap();
        // Through IPC, as batches arrive from executors: every column's
        // buffers are slices of the one message body.
        let mut bytes = Vec::new();
        let mut writer = StreamWriter::try_new(&mut bytes, &schema).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let decoded = StreamReader::try_new(bytes.as_slice(), None)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let real: usize = decoded
            .columns()
            .iter()
            .map(|c| wire_bytes(c.as_ref()))
            .sum();
        assert!(real < 2 * MAX_MESSAGE_BYTES, "{real} bytes");
        let pieces = wire_pieces(decoded.clone());
        assert_eq!(pieces.len(), real.div_ceil(MAX_MESSAGE_BYTES));
        assert_eq!(
            pieces.iter().map(|p| p.num_rows()).sum::<usize>(),
            rows as usize
        );
        assert_eq!(
            datafusion::arrow::compute::concat_batches(&schema, &pieces).unwrap(),
            batch
        );
        for piece in &pieces {
            let size: usize = piece.columns().iter().map(|c| wire_bytes(c.as_ref())).sum();
            assert!(size <= MAX_MESSAGE_BYTES + 1024, "{size} bytes");
        }
        // Small batches go whole; so does an empty one.
        assert_eq!(wire_pieces(decoded.slice(0, 10)).len(), 1);
        assert_eq!(wire_pieces(decoded.slice(0, 0)).len(), 1);
    }

    #[tokio::test]
    async fn encoded_messages_decode_to_the_batches_sent() {
        use arrow_flight::decode::FlightRecordBatchStream;
        use datafusion::arrow::array::{DictionaryArray, Int64Array, StringArray};
        use datafusion::arrow::datatypes::Int32Type;
        // Without dictionaries (Loch's own encoder) and with them
        // (arrow-flight's, sending their values).
        let plain = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batches: Vec<RecordBatch> = (0..3)
            .map(|b| {
                RecordBatch::try_new(
                    Arc::clone(&plain),
                    vec![
                        Arc::new(Int64Array::from_iter_values(b * 50_000..(b + 1) * 50_000)),
                        Arc::new(StringArray::from_iter(
                            (0..50_000).map(|i| (i % 7 != 0).then(|| format!("row {b} {i}"))),
                        )),
                    ],
                )
                .unwrap()
            })
            .collect();
        let dictionary = Arc::new(Schema::new(vec![Field::new(
            "d",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        )]));
        let keyed = RecordBatch::try_new(
            Arc::clone(&dictionary),
            vec![Arc::new(
                ["a", "b", "a"]
                    .into_iter()
                    .collect::<DictionaryArray<Int32Type>>(),
            )],
        )
        .unwrap();
        for (schema, sent) in [(plain, batches), (dictionary, vec![keyed])] {
            let messages: Vec<_> = flight_data(
                Arc::clone(&schema),
                futures::stream::iter(sent.clone().into_iter().map(Ok)),
            )
            .collect()
            .await;
            let decoded: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(
                futures::stream::iter(messages).map_err(FlightError::from),
            )
            .try_collect()
            .await
            .unwrap();
            let rows = |b: &[RecordBatch]| b.iter().map(|b| b.num_rows()).sum::<usize>();
            assert_eq!(rows(&decoded), rows(&sent));
            for (got, want) in decoded.iter().zip(&sent) {
                for (g, w) in got.columns().iter().zip(want.columns()) {
                    let w = datafusion::arrow::compute::cast(w, g.data_type()).unwrap();
                    assert_eq!(g.as_ref(), w.as_ref());
                }
            }
        }
        // An error ends the stream as its status.
        let failed: Vec<_> = flight_data(
            Arc::new(Schema::empty()),
            futures::stream::iter([Err(Status::aborted("gone"))]),
        )
        .collect()
        .await;
        assert_eq!(failed.len(), 2);
        assert_eq!(failed[1].as_ref().unwrap_err().code(), tonic::Code::Aborted);
    }

    #[test]
    fn a_message_buffer_is_about_the_size_of_the_message() {
        use datafusion::arrow::array::{Int64Array, StringArray};
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter(
                    (0..100_000).map(|i| (i % 3 != 0).then_some(i)),
                )),
                Arc::new(StringArray::from_iter_values(
                    (0..100_000).map(|i| format!("value {i}")),
                )),
            ],
        )
        .unwrap();
        let mut encoder = WireEncoder::try_new(&schema).unwrap();
        for piece in [batch.clone(), batch.slice(7, 30_001), batch.slice(0, 0)] {
            let (message, held) = encoder.encode(&piece).unwrap();
            let size = message.data_header.len() + message.data_body.len() + 8;
            assert!(size <= held && held <= size + 4096, "{size} in {held}");
            let decoded = arrow_flight::utils::flight_data_to_arrow_batch(
                &message,
                Arc::clone(&schema),
                &Default::default(),
            )
            .unwrap();
            assert_eq!(decoded, piece);
        }
    }
}
