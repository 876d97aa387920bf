//! Typed counter sets: each set is one field list, from which its struct, its sum and its
//! entries in a results file's `counters` map are generated (as the server's `counters!`
//! in `src/stats.rs` does for `/stats`), so that a misspelled counter is a compile error
//! rather than a quiet new key or a quiet zero.
//!
//! Owns: the mapping between a counter and its name in results files, which is the field's
//! name. Must never: rename or drop a field quietly (`report` and the scripts under
//! `scripts/` read these names; renaming one is a schema change, see results.rs), or read
//! anything but the counters it knows from a results file.

/// Declares a counter set:
///
/// ```text
/// counter_set! {
///     /// What the set counts.
///     pub struct Name {
///         /// What the counter counts.
///         counter,
///     }
///     // Optional: counters a results file lists only when they are not zero.
///     nonzero_only { rare_counter, }
///     // Optional: whole sets whose counters this one lists as its own.
///     nested { field: OtherSet, }
/// }
/// ```
/// Every counter is a `u64` field named as in the results file. The set gets `add` (sums
/// another set, e.g. one thread's into the run's), `for_each` (visits each counter as a
/// results file lists it), `to_map` and `from_map` (the results file's `counters` map).
macro_rules! counter_set {
    (
        $(#[doc = $doc:literal])*
        pub struct $set:ident {
            $($(#[doc = $field_doc:literal])* $field:ident,)*
        }
        $(nonzero_only {
            $($(#[doc = $sparse_doc:literal])* $sparse:ident,)*
        })?
        $(nested {
            $($(#[doc = $nested_doc:literal])* $nested:ident: $nested_set:ident,)*
        })?
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct $set {
            $($(#[doc = $field_doc])* pub $field: u64,)*
            $($($(#[doc = $sparse_doc])* pub $sparse: u64,)*)?
            $($($(#[doc = $nested_doc])* pub $nested: $nested_set,)*)?
        }

        #[allow(dead_code)] // not every set is read back or visited by every caller
        impl $set {
            /// Adds `other` to this set, counter by counter.
            pub fn add(&mut self, other: &$set) {
                $(self.$field += other.$field;)*
                $($(self.$sparse += other.$sparse;)*)?
                $($(self.$nested.add(&other.$nested);)*)?
            }

            /// Calls `visit` with the name and value of every counter a results file lists:
            /// all of them, except a `nonzero_only` counter that is zero.
            pub fn for_each(&self, visit: &mut impl FnMut(&'static str, u64)) {
                $(visit(stringify!($field), self.$field);)*
                $($(if self.$sparse != 0 {
                    visit(stringify!($sparse), self.$sparse);
                })*)?
                $($(self.$nested.for_each(visit);)*)?
            }

            /// The set as a results file's `counters` map.
            pub fn to_map(&self) -> std::collections::BTreeMap<String, u64> {
                let mut map = std::collections::BTreeMap::new();
                self.for_each(&mut |name, value| {
                    map.insert(name.to_string(), value);
                });
                map
            }

            /// The set read back from a results file's `counters` map: a counter the file
            /// does not list (an older run, or a `nonzero_only` one) reads as zero, and
            /// names the set does not know are ignored.
            pub fn from_map(map: &std::collections::BTreeMap<String, u64>) -> $set {
                let read = |name: &str| map.get(name).copied().unwrap_or(0);
                $set {
                    $($field: read(stringify!($field)),)*
                    $($($sparse: read(stringify!($sparse)),)*)?
                    $($($nested: $nested_set::from_map(map),)*)?
                }
            }
        }
    };
}

pub(crate) use counter_set;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    counter_set! {
        /// Inner.
        pub struct Inner {
            inner_a,
        }
    }

    counter_set! {
        /// Outer.
        pub struct Outer {
            /// Documented.
            b,
            a,
        }
        nonzero_only {
            rare,
        }
        nested {
            inner: Inner,
        }
    }

    #[test]
    fn names_are_the_fields_and_zero_rare_counters_are_left_out() {
        let mut set = Outer {
            b: 2,
            ..Outer::default()
        };
        set.inner.inner_a = 7;
        let map = set.to_map();
        let expected: BTreeMap<String, u64> = [("a", 0), ("b", 2), ("inner_a", 7)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(map, expected);
        set.rare = 1;
        assert_eq!(set.to_map()["rare"], 1);
    }

    #[test]
    fn sets_add_and_read_back() {
        let mut one = Outer {
            a: 1,
            b: 2,
            rare: 3,
            inner: Inner { inner_a: 4 },
        };
        one.add(&one.clone());
        assert_eq!(
            one,
            Outer {
                a: 2,
                b: 4,
                rare: 6,
                inner: Inner { inner_a: 8 },
            }
        );
        let mut map = one.to_map();
        map.insert("unknown".into(), 9);
        map.remove("a");
        assert_eq!(Outer::from_map(&map), Outer { a: 0, ..one });
    }
}
