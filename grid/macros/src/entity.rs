//! `#[derive(HydraCacheEntity)]`.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::spanned::Spanned;
use syn::{DeriveInput, LitStr, Type};

use crate::names;

const USAGE: &str = "expected #[hydracache(entity = \"user\", collection = \"users\", id = i64)]";

#[derive(Default)]
struct Attrs {
    entity: Option<LitStr>,
    collection: Option<LitStr>,
    id: Option<Type>,
    /// The last #[hydracache(...)] attribute, where a missing key is reported.
    span: Option<Span>,
}

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let attrs = parse_attrs(input)?;
    let span = attrs.span.unwrap_or_else(Span::call_site);
    let missing = |what: &str, example: &str| {
        syn::Error::new(
            span,
            format!(
                "#[derive(HydraCacheEntity)] needs `{what}` in #[hydracache(...)], e.g. {example}"
            ),
        )
    };
    let entity = attrs
        .entity
        .ok_or_else(|| missing("entity", "entity = \"user\""))?;
    let id = attrs.id.ok_or_else(|| missing("id", "id = i64"))?;

    let collection = attrs.collection.map(|c| {
        quote!(const COLLECTION: ::core::option::Option<&'static str> = ::core::option::Option::Some(#c);)
    });
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::hydracache::db::CacheEntity for #name #ty_generics #where_clause {
            type Id = #id;
            const ENTITY: &'static str = #entity;
            #collection
        }
    })
}

fn parse_attrs(input: &DeriveInput) -> syn::Result<Attrs> {
    let mut attrs = Attrs::default();
    let mut seen_attr = false;
    for attr in input
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("hydracache"))
    {
        seen_attr = true;
        attrs.span = Some(attr.meta.span());
        if !matches!(attr.meta, syn::Meta::List(_)) {
            return Err(syn::Error::new(attr.meta.span(), USAGE));
        }
        attr.parse_nested_meta(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            match key.as_str() {
                "entity" | "collection" => {
                    let slot = if key == "entity" {
                        &mut attrs.entity
                    } else {
                        &mut attrs.collection
                    };
                    if slot.is_some() {
                        return Err(meta.error(format!("duplicate `{key}`")));
                    }
                    let value = meta.value()?;
                    let lit: LitStr = value.parse().map_err(|e| {
                        syn::Error::new(
                            e.span(),
                            format!(
                                "`{key}` takes a string literal, e.g. {key} = \"{}\"",
                                example(&key)
                            ),
                        )
                    })?;
                    if let Some(problem) = names::problem(&key, &lit.value()) {
                        return Err(syn::Error::new(lit.span(), problem));
                    }
                    *slot = Some(lit);
                    Ok(())
                }
                "id" => {
                    if attrs.id.is_some() {
                        return Err(meta.error("duplicate `id`"));
                    }
                    let value = meta.value()?;
                    let ty: Type = value.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`id` takes the id's type, e.g. id = i64")
                    })?;
                    attrs.id = Some(ty);
                    Ok(())
                }
                _ => Err(meta.error(format!(
                    "unknown hydracache attribute `{}`; expected `entity`, `collection` or `id`",
                    path_text(&meta.path)
                ))),
            }
        })?;
    }
    if !seen_attr {
        return Err(syn::Error::new(
            Span::call_site(),
            format!("#[derive(HydraCacheEntity)] needs an attribute: {USAGE}"),
        ));
    }
    Ok(attrs)
}

fn example(key: &str) -> &'static str {
    if key == "entity" {
        "user"
    } else {
        "users"
    }
}

fn path_text(path: &syn::Path) -> String {
    quote!(#path).to_string().replace(' ', "")
}
