//! Fixed vocabularies of the synthetic marketing data: advertiser apps, ad channels, campaign
//! name parts, user-agent templates, SKUs, prices and currencies.
//!
//! Order matters: the generator draws ranks with Zipf skew, so the first entries of each list
//! are the most frequent. Changing these lists changes the generated data for every seed.

/// Advertiser apps (the `app_id` attributed events belong to), most active first.
pub const APP_IDS: [&str; 20] = [
    "com.puzzlequest.match3",
    "com.blockblast.game",
    "com.fitpulse.tracker",
    "com.shopnow.mobile",
    "com.dragonlegends.rpg",
    "com.cookingfever.chef",
    "com.wordbloom.daily",
    "com.runnerdash.endless",
    "com.farmsaga.harvest",
    "com.stockpilot.invest",
    "com.tripnest.travel",
    "com.mealbox.delivery",
    "com.citybuilder.tycoon",
    "com.solitaire.classic",
    "com.langlearn.lingo",
    "com.photoglow.editor",
    "com.speedracer.drift",
    "com.mergemansion.home",
    "com.podwave.audio",
    "com.bingoblitz.live",
];

/// Ad channels (media sources), most used first.
pub const CHANNELS: [&str; 15] = [
    "google_ads",
    "meta",
    "tiktok",
    "applovin",
    "unity",
    "ironsource",
    "apple_search_ads",
    "mintegral",
    "vungle",
    "snapchat",
    "moloco",
    "liftoff",
    "digital_turbine",
    "x_ads",
    "organic_web",
];

/// Campaign name parts: `{channel}_{geo}_{objective}_{n:02}`.
pub const CAMPAIGN_GEOS: [&str; 10] = ["us", "gb", "de", "fr", "jp", "br", "in", "ca", "au", "kr"];
pub const CAMPAIGN_OBJECTIVES: [&str; 5] = ["install", "retarget", "purchase", "brand", "event"];

/// Platforms, indexed by the generator's platform code.
pub const PLATFORMS: [&str; 3] = ["ios", "android", "web"];
/// Share of devices per platform (same order as [`PLATFORMS`]).
pub const PLATFORM_WEIGHTS: [f64; 3] = [0.45, 0.45, 0.10];

pub const IOS_VERSIONS: [&str; 8] = [
    "16_6", "16_7", "17_0", "17_2", "17_4", "17_5", "18_0", "18_1",
];
pub const IOS_MODELS: [&str; 2] = ["iPhone", "iPad"];
pub const ANDROID_VERSIONS: [&str; 4] = ["12", "13", "14", "15"];
pub const ANDROID_MODELS: [&str; 10] = [
    "Pixel 8",
    "Pixel 7a",
    "SM-S918B",
    "SM-A546B",
    "SM-G991U",
    "2201116SG",
    "CPH2451",
    "moto g power (2023)",
    "M2101K6G",
    "V2227",
];
pub const CHROME_VERSIONS: [&str; 4] = [
    "124.0.6367.82",
    "125.0.6422.113",
    "126.0.6478.71",
    "127.0.6533.88",
];

/// Desktop/mobile-web user agents for `web` devices.
pub const WEB_USER_AGENTS: [&str; 8] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/127.0.0.0 Safari/537.36 Edg/127.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36 OPR/111.0.0.0",
];

/// Every user agent a device may have, grouped by platform code (ios, android, web).
pub fn user_agents() -> [Vec<String>; 3] {
    let mut ios = Vec::new();
    for model in IOS_MODELS {
        for v in IOS_VERSIONS {
            let os = if model == "iPad" {
                "CPU OS"
            } else {
                "CPU iPhone OS"
            };
            ios.push(format!(
                "Mozilla/5.0 ({model}; {os} {v} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
            ));
        }
    }
    let mut android = Vec::new();
    for model in ANDROID_MODELS {
        for (i, v) in ANDROID_VERSIONS.iter().enumerate() {
            let chrome = CHROME_VERSIONS[i];
            android.push(format!(
                "Mozilla/5.0 (Linux; Android {v}; {model}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome} Mobile Safari/537.36"
            ));
        }
    }
    let web = WEB_USER_AGENTS.iter().map(|s| s.to_string()).collect();
    [ios, android, web]
}

/// In-app purchase SKUs, most bought first.
pub const SKUS: [&str; 8] = [
    "gems_100",
    "coins_small",
    "no_ads",
    "gems_500",
    "starter_pack",
    "vip_weekly",
    "gems_2000",
    "season_pass",
];
/// USD price of each SKU (same order as [`SKUS`]).
pub const SKU_PRICES_USD: [f64; 8] = [0.99, 1.99, 4.99, 4.99, 9.99, 7.99, 19.99, 49.99];

/// Purchase currencies and their shares; JPY amounts are whole yen.
pub const CURRENCIES: [&str; 4] = ["USD", "EUR", "GBP", "JPY"];
pub const CURRENCY_WEIGHTS: [f64; 4] = [0.85, 0.08, 0.04, 0.03];
/// Multiplier from a USD list price to the currency's price point.
pub const CURRENCY_PRICE_FACTOR: [f64; 4] = [1.0, 1.0, 1.0, 150.0];
