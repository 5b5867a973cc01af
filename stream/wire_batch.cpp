// PAGE_BATCH: BatchEncoder at the source, parse_page_batch and the feature
// check at the destination (docs/stream-format.md, PAGE_BATCH and Page
// encodings).  Every check of the parser corresponds to a sentence there.
#include "stream/wire.hpp"
#include "stream/wire_internal.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace fastmig::wire {

using bytes::load_le;
using bytes::store_le;
using namespace detail;

// ---- BatchEncoder -----------------------------------------------------------

BatchEncoder::BatchEncoder()
{
    // Sized once for a full batch so that the hot path never reallocates.
    descs_.reserve(kMaxBatchPages);
    data_.reserve(kMaxBatchPages);
    head_.reserve(kRecordHeaderSize + kBatchFixed + kMaxBatchPages * 8);
    iov_.reserve(kMaxBatchPages + 2);
}

void BatchEncoder::begin(std::uint32_t round)
{
    round_ = round;
    descs_.clear();
    data_.clear();
    iov_.clear();
    data_bytes_ = 0;
    wire_size_ = 0;
}

void BatchEncoder::add(Pfn pfn, PageEncoding enc, std::span<const std::uint8_t> data)
{
    // These are bugs in the caller, not stream errors: a batch this encoder
    // produced must always pass parse_page_batch.
    if (full())
        throw Error("page batch already holds " + str(kMaxBatchPages) + " pages");
    if (pfn > kPfnMask)
        throw Error("pfn " + str(pfn) + " does not fit a page descriptor");
    const std::size_t len = data.size();
    bool ok = false;
    switch (enc) {
    case PageEncoding::zero:
    case PageEncoding::free: ok = len == 0; break;
    case PageEncoding::raw: ok = len == kPageSize; break;
    case PageEncoding::deflate: // a group of one page; continuations only come from add_group
    case PageEncoding::xbzrle: ok = len >= 1 && len <= kMaxEncodedPage; break;
    case PageEncoding::zero_run:
    case PageEncoding::free_run: ok = false; break; // add_run
    }
    if (!ok)
        throw Error("page encoding " + str(static_cast<unsigned>(enc)) + " cannot carry " + str(len) +
                    " bytes (pfn " + str(pfn) + ")");
    descs_.push_back(pfn | std::uint64_t{static_cast<std::uint8_t>(enc)} << kEncodingShift |
                     std::uint64_t{len} << kLengthShift);
    if (len) {
        // writev takes non-const pointers but only reads through them.
        data_.push_back({const_cast<std::uint8_t*>(data.data()), len});
        data_bytes_ += len;
    }
}

void BatchEncoder::add_run(Pfn first, std::uint32_t n, PageEncoding kind)
{
    if (kind != PageEncoding::zero && kind != PageEncoding::free)
        throw Error("a page run is of zero or free pages, not encoding " + str(static_cast<unsigned>(kind)));
    if (n == 1)
        return add(first, kind, {});
    if (full())
        throw Error("page batch already holds " + str(kMaxBatchPages) + " pages");
    if (n == 0 || n > kMaxRun || first > kPfnMask || first + n - 1 > kPfnMask ||
        (first >> kChannelRegionShift) != ((first + n - 1) >> kChannelRegionShift))
        throw Error("a run of " + str(n) + " pages from pfn " + str(first) +
                    " is empty, too long or crosses a channel region");
    const auto enc = kind == PageEncoding::zero ? PageEncoding::zero_run : PageEncoding::free_run;
    descs_.push_back(first | std::uint64_t{static_cast<std::uint8_t>(enc)} << kEncodingShift |
                     std::uint64_t{n} << kLengthShift);
}

void BatchEncoder::add_group(std::span<const Pfn> pfns, std::span<const std::uint8_t> blob)
{
    // All checks before the first descriptor goes in, so a refused group
    // leaves the batch as it was.
    const std::size_t n = pfns.size();
    if (n < 1 || n > kMaxGroupPages)
        throw Error("a deflate group has " + str(n) + " pages, must be 1.." + str(kMaxGroupPages));
    if (n > room())
        throw Error("a deflate group of " + str(n) + " pages does not fit the batch (room for " + str(room()) +
                    ")");
    if (blob.empty() || blob.size() > n * kMaxEncodedPage)
        throw Error("a deflate group of " + str(n) + " pages cannot carry " + str(blob.size()) +
                    " bytes (1.." + str(n * kMaxEncodedPage) + ")");
    for (Pfn pfn : pfns)
        if (pfn > kPfnMask)
            throw Error("pfn " + str(pfn) + " does not fit a page descriptor");
    constexpr std::uint64_t enc = std::uint64_t{static_cast<std::uint8_t>(PageEncoding::deflate)} << kEncodingShift;
    descs_.push_back(pfns[0] | enc | std::uint64_t{blob.size()} << kLengthShift);
    for (std::size_t i = 1; i < n; ++i)
        descs_.push_back(pfns[i] | enc);
    data_.push_back({const_cast<std::uint8_t*>(blob.data()), blob.size()});
    data_bytes_ += blob.size();
}

std::span<const iovec> BatchEncoder::finish()
{
    if (descs_.empty())
        throw Error("an empty page batch cannot be encoded (count must be >= 1)");
    const std::size_t count = descs_.size();
    const std::size_t body = kBatchFixed + count * 8 + data_bytes_;
    // count <= kMaxBatchPages and every page <= kMaxEncodedPage keep this true.
    if (body > kMaxRecordBody)
        throw Error("page batch body of " + str(body) + " bytes exceeds " + str(kMaxRecordBody));

    head_.resize(kRecordHeaderSize + kBatchFixed + count * 8);
    std::uint8_t* h = head_.data();
    fill_record_header(h, RecordType::page_batch, static_cast<std::uint32_t>(body));
    store_le<std::uint32_t>(h + 16, round_);
    store_le<std::uint32_t>(h + 20, static_cast<std::uint32_t>(count));
    store_le<std::uint64_t>(h + 24, 0);
    for (std::size_t i = 0; i < count; ++i)
        store_le<std::uint64_t>(h + 32 + i * 8, descs_[i]);

    // The CRC follows the wire order: head (crc field still zero), then each
    // page's data where it lies, so no page is copied to checksum it.
    std::uint32_t crc = crc32c(head_);
    for (const iovec& v : data_)
        crc = crc32c({static_cast<const std::uint8_t*>(v.iov_base), v.iov_len}, crc);
    store_le<std::uint32_t>(h + 8, ~crc);

    iov_.clear();
    iov_.push_back({head_.data(), head_.size()});
    iov_.insert(iov_.end(), data_.begin(), data_.end());
    const std::size_t pad = pad_of(body);
    if (pad)
        iov_.push_back({const_cast<std::uint8_t*>(kZeros), pad});
    wire_size_ = kRecordHeaderSize + body + pad;
    return iov_;
}

// ---- decoding -------------------------------------------------------------

namespace {

constexpr const char* kUnknownEncoding = "unknown encoding";

// The rule a descriptor's length field breaks, or nullptr; kUnknownEncoding
// for an encoding this version does not define.
const char* length_rule(PageEncoding enc, std::uint64_t len, Pfn pfn, std::uint64_t nr_pages)
{
    switch (enc) {
    case PageEncoding::zero: return len != 0 ? "zero page must have length 0" : nullptr;
    case PageEncoding::free: return len != 0 ? "free page must have length 0" : nullptr;
    case PageEncoding::raw: return len != kPageSize ? "raw page must have length 4096" : nullptr;
    case PageEncoding::xbzrle:
        return len < 1 || len > kMaxEncodedPage ? "encoded page must have length 1..4160" : nullptr;
    case PageEncoding::deflate:
        // The exact bound (n pages' worth) is checked when the group closes.
        return len > kMaxGroupPages * std::size_t{kMaxEncodedPage} ? "deflate group blob must have length 1..66560"
                                                                    : nullptr;
    case PageEncoding::zero_run:
    case PageEncoding::free_run:
        // `length` is a page count here, not bytes of data.
        if (len < 2 || len > kMaxRun)
            return "a run must have 2..512 pages";
        if (len > nr_pages - pfn)
            return "the run goes past nr_pages";
        if ((pfn >> kChannelRegionShift) != ((pfn + len - 1) >> kChannelRegionShift))
            return "the run crosses a channel region (512 pages)";
        return nullptr;
    }
    return kUnknownEncoding;
}

} // namespace

void parse_page_batch(std::span<const std::uint8_t> body, std::uint64_t nr_pages, PageBatch& out)
{
    out.page_count = 0;
    out.pages.clear();
    out.data.clear();
    out.group_pages.clear();
    if (body.size() < kBatchFixed)
        fail("page_batch", "body of " + str(body.size()) + " bytes is shorter than " + str(kBatchFixed));
    const std::uint8_t* p = body.data();
    out.round = load_le<std::uint32_t>(p);
    const std::uint32_t count = load_le<std::uint32_t>(p + 4);
    const std::uint64_t reserved = load_le<std::uint64_t>(p + 8);
    if (reserved != 0)
        fail("page_batch", "reserved field is " + hex(reserved) + ", must be 0");
    if (count == 0)
        fail("page_batch", "count is 0, must be at least 1");
    if (count > kMaxBatchPages)
        fail("page_batch", "count " + str(count) + " exceeds " + str(kMaxBatchPages));
    const std::size_t desc_end = kBatchFixed + std::size_t{count} * 8;
    if (body.size() < desc_end)
        fail("page_batch", str(count) + " descriptors need " + str(desc_end) + " bytes, body has " +
                               str(body.size()));

    // The open deflate group, if any: index of its start descriptor.  A group
    // is closed (and its blob length judged against its page count) when a
    // descriptor that is not a continuation arrives, or at the end.
    constexpr std::size_t kNoGroup = SIZE_MAX;
    std::size_t group = kNoGroup;
    auto close_group = [&] {
        if (group == kNoGroup)
            return;
        const std::size_t n = out.group_pages[group];
        const std::uint32_t blob = out.pages[group].length;
        if (blob > n * std::size_t{kMaxEncodedPage})
            fail("page_batch", "descriptor " + str(group) + " (pfn " + str(out.pages[group].pfn) +
                                   "): deflate group of " + str(n) + " pages has a blob of " + str(blob) +
                                   " bytes, more than " + str(n * std::size_t{kMaxEncodedPage}));
        group = kNoGroup;
    };

    std::size_t off = desc_end;
    for (std::uint32_t i = 0; i < count; ++i) {
        const std::uint64_t d = load_le<std::uint64_t>(p + kBatchFixed + std::size_t{i} * 8);
        const Pfn pfn = d & kPfnMask;
        const unsigned enc = static_cast<unsigned>(d >> kEncodingShift) & 0xf;
        const std::uint64_t len = d >> kLengthShift;
        auto where = [&] { return "descriptor " + str(i) + " (pfn " + str(pfn) + "): "; };
        if (pfn >= nr_pages)
            fail("page_batch", "descriptor " + str(i) + ": pfn " + str(pfn) + " >= nr_pages " + str(nr_pages));
        const char* rule = length_rule(static_cast<PageEncoding>(enc), len, pfn, nr_pages);
        if (rule == kUnknownEncoding)
            fail("page_batch", where() + "unknown encoding " + str(enc));
        if (rule)
            fail("page_batch", where() + "length " + str(len) + ": " + rule);
        if (static_cast<PageEncoding>(enc) == PageEncoding::zero_run ||
            static_cast<PageEncoding>(enc) == PageEncoding::free_run) {
            close_group();
            out.pages.push_back({pfn, static_cast<PageEncoding>(enc), static_cast<std::uint32_t>(len)});
            out.data.push_back({});
            out.group_pages.push_back(1);
            out.page_count += len;
            continue;
        }
        if (len > body.size() - off)
            fail("page_batch", where() + "length " + str(len) + " runs past the end of the body (" +
                                   str(body.size() - off) + " bytes left)");
        std::uint8_t in_group = 1;
        if (static_cast<PageEncoding>(enc) == PageEncoding::deflate && len == 0) {
            if (group == kNoGroup)
                fail("page_batch", where() + "deflate continuation (length 0) without a group start before it");
            if (out.group_pages[group] >= kMaxGroupPages)
                fail("page_batch", where() + "deflate group starting at descriptor " + str(group) +
                                       " has more than " + str(kMaxGroupPages) + " pages");
            ++out.group_pages[group];
            in_group = 0;
        } else {
            close_group();
            if (static_cast<PageEncoding>(enc) == PageEncoding::deflate)
                group = i;
        }
        out.pages.push_back({pfn, static_cast<PageEncoding>(enc), static_cast<std::uint32_t>(len)});
        out.data.push_back(body.subspan(off, len));
        out.group_pages.push_back(in_group);
        ++out.page_count;
        off += len;
    }
    close_group();
    if (off != body.size())
        fail("page_batch", "lengths do not add up: " + str(body.size() - off) +
                               " bytes left over after the data of " + str(count) + " pages");
}

std::uint64_t encoding_feature(PageEncoding e)
{
    switch (e) {
    case PageEncoding::deflate: return kFeatureDeflate;
    case PageEncoding::xbzrle: return kFeatureXbzrle;
    case PageEncoding::zero_run:
    case PageEncoding::free_run: return kFeatureRuns;
    case PageEncoding::zero:
    case PageEncoding::raw:
    case PageEncoding::free: return 0;
    }
    return ~std::uint64_t{0}; // unknown encodings are never enabled
}

void check_batch_features(const PageBatch& batch, std::uint64_t features)
{
    for (std::size_t i = 0; i < batch.pages.size(); ++i) {
        const PageDesc& d = batch.pages[i];
        const std::uint64_t need = encoding_feature(d.encoding);
        if ((need & features) != need)
            fail("page_batch", "descriptor " + str(i) + " (pfn " + str(d.pfn) + "): encoding " +
                                   (d.encoding == PageEncoding::deflate  ? "DEFLATE" :
                                    d.encoding == PageEncoding::xbzrle   ? "XBZRLE" :
                                    d.encoding == PageEncoding::zero_run ? "ZERO_RUN" :
                                    d.encoding == PageEncoding::free_run ? "FREE_RUN" :
                                                                          str(static_cast<unsigned>(d.encoding))) +
                                   " was not negotiated (feature bits " + hex(features) + ")");
    }
}

} // namespace fastmig::wire
