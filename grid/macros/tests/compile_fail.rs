//! Bad `#[hydracache(...)]` attributes and `query_cache_policy!` fields
//! are compile errors that say what to write instead.

#[test]
fn bad_attributes_and_fields_are_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
