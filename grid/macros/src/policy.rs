//! `query_cache_policy!(name = .., entity = .., id = .., tag = .., ttl_secs = ..)`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Ident, Lit, LitStr, Token, Type};

use crate::names;

const FIELDS: &str =
    "name, key, entity, id, tag, collection_tag, ttl_secs, ttl, negative_ttl_secs, negative_ttl";

/// `entity = "user"` or `entity = User` (a type implementing CacheEntity).
enum Entity {
    Name(LitStr),
    Type(Box<Type>),
}

enum Value {
    Expr(Box<Expr>),
    Entity(Entity),
}

struct Field {
    name: Ident,
    value: Value,
}

impl Parse for Field {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        let value = if name == "entity" {
            if input.peek(LitStr) {
                Value::Entity(Entity::Name(input.parse()?))
            } else {
                let ty: Type = input.parse().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "`entity` takes an entity name (entity = \"user\") or a type that implements CacheEntity (entity = User)",
                    )
                })?;
                Value::Entity(Entity::Type(Box::new(ty)))
            }
        } else {
            Value::Expr(Box::new(input.parse()?))
        };
        Ok(Field { name, value })
    }
}

struct Fields(Punctuated<Field, Token![,]>);

impl Parse for Fields {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        Ok(Fields(Punctuated::parse_terminated(input)?))
    }
}

#[derive(Default)]
struct Policy {
    name: Option<Expr>,
    key: Option<(Ident, Expr)>,
    entity: Option<(Ident, Entity)>,
    id: Option<(Ident, Expr)>,
    tags: Vec<TokenStream>,
    ttl: Option<(Ident, TokenStream)>,
    negative_ttl: Option<(Ident, TokenStream)>,
}

pub(crate) fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let fields: Fields = syn::parse2(input)?;
    let mut p = Policy::default();
    for field in fields.0 {
        let Field { name, value } = field;
        let key = name.to_string();
        let duplicate = || syn::Error::new(name.span(), format!("duplicate `{key}`"));
        match (key.as_str(), value) {
            ("entity", Value::Entity(entity)) => {
                if p.entity.is_some() {
                    return Err(duplicate());
                }
                if let Entity::Name(lit) = &entity {
                    if let Some(problem) = names::problem("entity", &lit.value()) {
                        return Err(syn::Error::new(lit.span(), problem));
                    }
                }
                p.entity = Some((name, entity));
            }
            (_, Value::Entity(_)) => unreachable!("only `entity` parses as an entity"),
            ("name", Value::Expr(e)) => {
                if p.name.is_some() {
                    return Err(duplicate());
                }
                p.name = Some(*e);
            }
            ("key", Value::Expr(e)) => {
                if p.key.is_some() {
                    return Err(duplicate());
                }
                p.key = Some((name, *e));
            }
            ("id", Value::Expr(e)) => {
                if p.id.is_some() {
                    return Err(duplicate());
                }
                p.id = Some((name, *e));
            }
            ("tag" | "collection_tag", Value::Expr(e)) => {
                let method = Ident::new(&key, name.span());
                p.tags.push(quote_spanned!(e.span()=> .#method(#e)));
            }
            ("ttl_secs" | "ttl" | "negative_ttl_secs" | "negative_ttl", Value::Expr(e)) => {
                let negative = key.starts_with("negative");
                let slot = if negative {
                    &mut p.negative_ttl
                } else {
                    &mut p.ttl
                };
                if let Some((first, _)) = slot {
                    return Err(syn::Error::new(
                        name.span(),
                        format!("`{key}` given twice (already set by `{first}`)"),
                    ));
                }
                let duration = if key.ends_with("_secs") {
                    seconds(&key, &e)?
                } else {
                    quote_spanned!(e.span()=> #e)
                };
                *slot = Some((name, duration));
            }
            (_, Value::Expr(_)) => {
                return Err(syn::Error::new(
                    name.span(),
                    format!(
                        "unknown field `{key}` in query_cache_policy!; expected one of: {FIELDS}"
                    ),
                ));
            }
        }
    }

    let Some(name) = p.name else {
        return Err(syn::Error::new(
            Span::call_site(),
            "query_cache_policy! needs `name = \"...\"` (the query's diagnostic label)",
        ));
    };
    if let (Some((key, _)), Some(_)) = (&p.key, &p.entity) {
        return Err(syn::Error::new(
            key.span(),
            "`key` and `entity` both set the cache key: give one of them",
        ));
    }
    if let (Some((id, _)), None) = (&p.id, &p.entity) {
        return Err(syn::Error::new(
            id.span(),
            "`id` needs `entity` (the key is entity:id); for a key of your own use `key = ...`",
        ));
    }

    let mut calls = Vec::new();
    if let Some((_, key)) = p.key {
        calls.push(quote!(.key(#key)));
    }
    match (p.entity, p.id) {
        (Some((_, Entity::Name(lit))), Some((_, id))) => calls.push(quote!(.entity(#lit).id(#id))),
        (Some((_, Entity::Name(lit))), None) => calls.push(quote!(.entity(#lit))),
        (Some((_, Entity::Type(ty))), Some((_, id))) => {
            calls.push(quote!(.for_cache_entity::<#ty>(#id)))
        }
        (Some((_, Entity::Type(ty))), None) => calls.push(quote!(.entity_of::<#ty>())),
        (None, _) => {}
    }
    calls.extend(p.tags);
    if let Some((_, ttl)) = p.ttl {
        calls.push(quote!(.ttl(#ttl)));
    }
    if let Some((_, ttl)) = p.negative_ttl {
        calls.push(quote!(.negative_ttl(#ttl)));
    }
    Ok(quote! {
        ::hydracache::db::QueryCachePolicy::named(#name) #(#calls)*
    })
}

/// `ttl_secs = 60` → `Duration::from_secs(60)`, refusing literals that are
/// not whole numbers of seconds.
fn seconds(key: &str, e: &Expr) -> syn::Result<TokenStream> {
    if let Expr::Lit(lit) = e {
        match &lit.lit {
            Lit::Int(i) if i.suffix().is_empty() || i.suffix() == "u64" => {}
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    format!("`{key}` takes a whole number of seconds, e.g. {key} = 60"),
                ))
            }
        }
    }
    Ok(quote_spanned!(e.span()=> ::std::time::Duration::from_secs(#e)))
}
