// context.cpp — Context: a JSON object with insert/update semantics and write tracking.
#include "cloacina/context.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <ostream>

namespace cloacina {

Context Context::from_json(const boost::json::value& value) {
    if (value.is_null()) return Context();
    if (!value.is_object())
        throw ContextError("a context must be a JSON object, got: " + boost::json::serialize(value));
    return Context(value.get_object());
}

Context Context::parse(std::string_view json_text) {
    boost::system::error_code ec;
    boost::json::value value = boost::json::parse(json_text, ec);
    if (ec) throw ContextError("invalid context JSON: " + ec.message());
    return from_json(value);
}

void Context::insert_value(std::string_view key, boost::json::value value) {
    if (data_.contains(key))
        throw ContextError("context key \"" + std::string(key) + "\" already exists (use update to change it)");
    data_.emplace(key, std::move(value));
    written_.emplace(key);
}

void Context::update_value(std::string_view key, boost::json::value value) {
    auto it = data_.find(key);
    if (it == data_.end())
        throw ContextError("context key \"" + std::string(key) + "\" does not exist (use insert to add it)");
    it->value() = std::move(value);
    written_.emplace(key);
}

void Context::upsert_value(std::string_view key, boost::json::value value) {
    data_[key] = std::move(value);
    written_.emplace(key);
}

std::optional<boost::json::value> Context::remove(std::string_view key) {
    auto it = data_.find(key);
    if (it == data_.end()) return std::nullopt;
    boost::json::value removed = std::move(it->value());
    data_.erase(it);
    if (auto w = written_.find(key); w != written_.end()) written_.erase(w);
    return removed;
}

const boost::json::value* Context::get(std::string_view key) const noexcept { return data_.if_contains(key); }

boost::json::object Context::changes() const {
    boost::json::object out;
    for (const auto& key : written_) {
        if (const auto* value = data_.if_contains(key)) out.emplace(key, *value);
    }
    return out;
}

std::string Context::to_string() const { return boost::json::serialize(data_); }

std::ostream& operator<<(std::ostream& out, const Context& context) { return out << context.to_string(); }

}  // namespace cloacina
