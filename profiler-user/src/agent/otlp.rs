//! OTLP profiles (`opentelemetry.proto.collector.profiles.v1development`, the status the
//! signal has) over HTTP: `POST /v1development/profiles` with an `ExportProfilesServiceRequest`
//! in binary protobuf. Built from the pprof profiles the window already makes, so both
//! destinations carry the same stacks and labels: one OTLP Profile per pprof sample type
//! (OTLP profiles have one), pprof labels as attributes, the service as the resource.
//!
//! Field numbers are those of the schema vendored in tests/proto/otlp (opentelemetry-proto
//! commit ac2c4b5d1f3a6079de62f9afec860158ecc8af09), which the tests decode every body with.
use std::collections::HashMap;

use prost::Message;

use crate::outputs::pprof::proto as pprof;

pub const PATH: &str = "/v1development/profiles";
pub const CONTENT_TYPE: &str = "application/x-protobuf";

#[derive(Clone, PartialEq, Message)]
pub struct ExportProfilesServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_profiles: Vec<ResourceProfiles>,
    #[prost(message, optional, tag = "2")]
    pub dictionary: Option<ProfilesDictionary>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProfilesDictionary {
    #[prost(message, repeated, tag = "1")]
    pub mapping_table: Vec<Mapping>,
    #[prost(message, repeated, tag = "2")]
    pub location_table: Vec<Location>,
    #[prost(message, repeated, tag = "3")]
    pub function_table: Vec<Function>,
    #[prost(message, repeated, tag = "4")]
    pub link_table: Vec<Link>,
    #[prost(string, repeated, tag = "5")]
    pub string_table: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    pub attribute_table: Vec<KeyValueAndUnit>,
    #[prost(message, repeated, tag = "7")]
    pub stack_table: Vec<Stack>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ResourceProfiles {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_profiles: Vec<ScopeProfiles>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    #[prost(oneof = "Value", tags = "1, 3")]
    pub value: Option<Value>,
}

#[derive(Clone, PartialEq, Eq, Hash, prost::Oneof)]
pub enum Value {
    #[prost(string, tag = "1")]
    String(String),
    #[prost(int64, tag = "3")]
    Int(i64),
}

#[derive(Clone, PartialEq, Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct ScopeProfiles {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub profiles: Vec<Profile>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Profile {
    #[prost(message, optional, tag = "1")]
    pub sample_type: Option<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    #[prost(uint64, tag = "4")]
    pub duration_nano: u64,
    #[prost(message, optional, tag = "5")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "6")]
    pub period: i64,
    #[prost(bytes = "vec", tag = "7")]
    pub profile_id: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct ValueType {
    #[prost(int32, tag = "1")]
    pub type_strindex: i32,
    #[prost(int32, tag = "2")]
    pub unit_strindex: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(int32, tag = "1")]
    pub stack_index: i32,
    #[prost(int32, repeated, tag = "2")]
    pub attribute_indices: Vec<i32>,
    #[prost(int64, repeated, tag = "4")]
    pub values: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Link {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub memory_start: u64,
    #[prost(uint64, tag = "2")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "3")]
    pub file_offset: u64,
    #[prost(int32, tag = "4")]
    pub filename_strindex: i32,
    #[prost(int32, repeated, tag = "5")]
    pub attribute_indices: Vec<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Stack {
    #[prost(int32, repeated, tag = "1")]
    pub location_indices: Vec<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Location {
    #[prost(int32, tag = "1")]
    pub mapping_index: i32,
    #[prost(uint64, tag = "2")]
    pub address: u64,
    #[prost(message, repeated, tag = "3")]
    pub lines: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Line {
    #[prost(int32, tag = "1")]
    pub function_index: i32,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Function {
    #[prost(int32, tag = "1")]
    pub name_strindex: i32,
    #[prost(int32, tag = "2")]
    pub system_name_strindex: i32,
    #[prost(int32, tag = "3")]
    pub filename_strindex: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValueAndUnit {
    #[prost(int32, tag = "1")]
    pub key_strindex: i32,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
    #[prost(int32, tag = "3")]
    pub unit_strindex: i32,
}

/// One service's profiles of a window, with the resource attributes that name it.
pub struct Group<'a> {
    pub attributes: Vec<(String, String)>,
    pub profiles: Vec<&'a pprof::Profile>,
}

/// The dictionary every profile of a request shares; index 0 of each table is its zero value,
/// as the schema requires.
#[derive(Default)]
struct Dictionary {
    d: ProfilesDictionary,
    strings: HashMap<String, i32>,
    attributes: HashMap<(i32, Option<Value>), i32>,
    stacks: HashMap<Vec<i32>, i32>,
}

fn index(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

impl Dictionary {
    fn new() -> Self {
        let mut d = Self::default();
        d.d.mapping_table.push(Mapping::default());
        d.d.location_table.push(Location::default());
        d.d.function_table.push(Function::default());
        d.d.link_table.push(Link::default());
        d.d.attribute_table.push(KeyValueAndUnit::default());
        d.d.stack_table.push(Stack::default());
        d.string("");
        d
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = index(self.d.string_table.len());
        self.d.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn attribute(&mut self, key: &str, value: Value) -> i32 {
        let key = self.string(key);
        let k = (key, Some(value.clone()));
        if let Some(&i) = self.attributes.get(&k) {
            return i;
        }
        let i = index(self.d.attribute_table.len());
        self.d.attribute_table.push(KeyValueAndUnit {
            key_strindex: key,
            value: Some(AnyValue { value: Some(value) }),
            unit_strindex: 0,
        });
        self.attributes.insert(k, i);
        i
    }

    fn stack(&mut self, locations: Vec<i32>) -> i32 {
        if let Some(&i) = self.stacks.get(&locations) {
            return i;
        }
        let i = index(self.d.stack_table.len());
        self.d.stack_table.push(Stack {
            location_indices: locations.clone(),
        });
        self.stacks.insert(locations, i);
        i
    }

    /// Adds `p`'s samples as one OTLP profile per sample type.
    fn add(&mut self, p: &pprof::Profile) -> Vec<Profile> {
        let s = |i: i64| {
            usize::try_from(i)
                .ok()
                .and_then(|i| p.string_table.get(i))
                .map_or("", String::as_str)
        };
        let mut mappings = HashMap::new();
        for m in &p.mapping {
            let filename_strindex = self.string(s(m.filename));
            let mut attribute_indices = Vec::new();
            if m.build_id != 0 {
                attribute_indices.push(self.attribute(
                    "process.executable.build_id.gnu",
                    Value::String(s(m.build_id).into()),
                ));
            }
            mappings.insert(m.id, index(self.d.mapping_table.len()));
            self.d.mapping_table.push(Mapping {
                memory_start: m.memory_start,
                memory_limit: m.memory_limit,
                file_offset: m.file_offset,
                filename_strindex,
                attribute_indices,
            });
        }
        let mut functions = HashMap::new();
        for f in &p.function {
            let func = Function {
                name_strindex: self.string(s(f.name)),
                system_name_strindex: self.string(s(f.system_name)),
                filename_strindex: self.string(s(f.filename)),
            };
            functions.insert(f.id, index(self.d.function_table.len()));
            self.d.function_table.push(func);
        }
        let mut locations = HashMap::new();
        for l in &p.location {
            let loc = Location {
                mapping_index: mappings.get(&l.mapping_id).copied().unwrap_or(0),
                address: l.address,
                lines: l
                    .line
                    .iter()
                    .map(|line| Line {
                        function_index: functions.get(&line.function_id).copied().unwrap_or(0),
                        line: line.line,
                    })
                    .collect(),
            };
            locations.insert(l.id, index(self.d.location_table.len()));
            self.d.location_table.push(loc);
        }
        let samples: Vec<(i32, Vec<i32>, &[i64])> = p
            .sample
            .iter()
            .map(|sample| {
                let stack = self.stack(
                    sample
                        .location_id
                        .iter()
                        .map(|id| locations.get(id).copied().unwrap_or(0))
                        .collect(),
                );
                let attrs = sample
                    .label
                    .iter()
                    .map(|l| {
                        let value = if l.str != 0 {
                            Value::String(s(l.str).to_string())
                        } else {
                            Value::Int(l.num)
                        };
                        self.attribute(s(l.key), value)
                    })
                    .collect();
                (stack, attrs, sample.value.as_slice())
            })
            .collect();
        let period_type = p.period_type.map(|t| ValueType {
            type_strindex: self.string(s(t.r#type)),
            unit_strindex: self.string(s(t.unit)),
        });
        p.sample_type
            .iter()
            .enumerate()
            .map(|(i, t)| Profile {
                sample_type: Some(ValueType {
                    type_strindex: self.string(s(t.r#type)),
                    unit_strindex: self.string(s(t.unit)),
                }),
                samples: samples
                    .iter()
                    .filter_map(|(stack, attrs, values)| {
                        Some(Sample {
                            stack_index: *stack,
                            attribute_indices: attrs.clone(),
                            values: vec![*values.get(i)?],
                        })
                    })
                    .collect(),
                time_unix_nano: u64::try_from(p.time_nanos).unwrap_or(0),
                duration_nano: u64::try_from(p.duration_nanos).unwrap_or(0),
                period_type,
                period: p.period,
                profile_id: profile_id(p.time_nanos, i),
            })
            .collect()
    }
}

/// Unique per window and sample type, never all zeroes (which the schema calls invalid).
fn profile_id(time_nanos: i64, sample_type: usize) -> Vec<u8> {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&time_nanos.to_le_bytes());
    id[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    id[12] = u8::try_from(sample_type).unwrap_or(u8::MAX);
    id[15] = 1;
    id.to_vec()
}

/// The request for one window: every group as a resource.
pub fn request(groups: &[Group]) -> Vec<u8> {
    let mut dict = Dictionary::new();
    let resource_profiles = groups
        .iter()
        .map(|g| ResourceProfiles {
            resource: Some(Resource {
                attributes: g
                    .attributes
                    .iter()
                    .map(|(k, v)| KeyValue {
                        key: k.clone(),
                        value: Some(AnyValue {
                            value: Some(Value::String(v.clone())),
                        }),
                    })
                    .collect(),
            }),
            scope_profiles: vec![ScopeProfiles {
                scope: Some(InstrumentationScope {
                    name: "profiler".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                profiles: g.profiles.iter().flat_map(|p| dict.add(p)).collect(),
            }],
        })
        .collect();
    ExportProfilesServiceRequest {
        resource_profiles,
        dictionary: Some(dict.d),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_becomes_one_profile_per_sample_type_sharing_one_dictionary() {
        let rec = crate::model::tests::sample_recording();
        let cpu = crate::outputs::pprof::cpu_profile(&rec);
        let groups = [Group {
            attributes: vec![("service.name".into(), "app".into())],
            profiles: vec![&cpu],
        }];
        let bytes = request(&groups);
        let req = ExportProfilesServiceRequest::decode(bytes.as_slice()).unwrap();
        let dict = req.dictionary.unwrap();
        assert_eq!(dict.string_table[0], "");
        assert_eq!(dict.stack_table[0], Stack::default());
        assert_eq!(dict.location_table[0], Location::default());
        let profiles = &req.resource_profiles[0].scope_profiles[0].profiles;
        assert_eq!(profiles.len(), 2);
        let types: Vec<&str> = profiles
            .iter()
            .map(|p| dict.string_table[p.sample_type.unwrap().type_strindex as usize].as_str())
            .collect();
        assert_eq!(types, ["samples", "cpu"]);
        let total: i64 = profiles[0].samples.iter().flat_map(|s| &s.values).sum();
        assert_eq!(total, rec.samples.len() as i64);
        // Every index points into its table.
        for s in &profiles[0].samples {
            assert!((s.stack_index as usize) < dict.stack_table.len());
            for &a in &s.attribute_indices {
                assert!((a as usize) < dict.attribute_table.len() && a != 0);
            }
        }
        for st in &dict.stack_table {
            for &l in &st.location_indices {
                assert!(l > 0 && (l as usize) < dict.location_table.len());
            }
        }
    }
}
