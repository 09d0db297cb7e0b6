#!/usr/bin/env bash
# Deploys labrelay to Google Cloud: the three services on Cloud Run, talking
# through Google Cloud Pub/Sub, as in the lab "Build a Resilient, Asynchronous
# System with Cloud Run and Pub/Sub", plus what the lab leaves out: private
# push services with verified tokens, credentials in Secret Manager, a
# dead-letter topic, one least-privilege service account per service.
#
#   deploy/cloudrun/deploy.sh --project PROJECT --region REGION \
#       --smtp-url 'smtp://smtp.example.com:587?tls=required' \
#       --smtp-username results@clinic.example --email-from 'Pet Theory <results@clinic.example>' \
#       --twilio-account-sid AC... --twilio-from +15551230000 \
#       --ingest-keys-file lab-keys.txt
#   deploy/cloudrun/deploy.sh --dry-run --project PROJECT --region REGION   # print the plan only
#
# Secrets are never arguments: on the first run SMTP_PASSWORD and
# TWILIO_AUTH_TOKEN are read from the environment, and the suppression key
# is made from /dev/urandom, and each is handed to Secret Manager on
# standard input. Every step looks before it creates, and what
# exists is brought to the kit's settings (printing what changed), so a
# re-run converges and a project that ran the lab is taken over with a
# warning; a look-up that fails for any reason but "not found" stops the
# script. A secret gets a new version only with --rotate-secrets, and the
# suppression key (made on the first run) never does. The
# deployer's permissions are checked first (testIamPermissions), naming any
# that is missing. --dry-run prints every gcloud command, one per line after
# "+ ", runs none and needs neither gcloud nor a login; look-ups are printed
# and taken as "not found". docs/production.md explains what gets created.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/cloudrun/deploy.sh --project PROJECT [options]

  --project ID                 Google Cloud project (env GOOGLE_CLOUD_PROJECT)
  --region REGION              Cloud Run and Artifact Registry region (env REGION; default us-central1)
  --tag TAG                    image tag (env IMAGE_TAG; default: the version in Cargo.toml)
  --rebuild                    build the image even if the tag already exists
  --repository NAME            Artifact Registry repository (default labrelay)
  --smtp-url URL               env SMTP_URL: smtp://host:587?tls=required or smtps://host:465
  --smtp-username NAME         env SMTP_USERNAME (the password comes from SMTP_PASSWORD on the first run)
  --email-from MAILBOX         env EMAIL_FROM
  --email-reply-to MAILBOX     env EMAIL_REPLY_TO
  --twilio-account-sid SID     env TWILIO_ACCOUNT_SID (the token comes from TWILIO_AUTH_TOKEN on the first run)
  --twilio-from NUMBER         env TWILIO_FROM
  --twilio-messaging-service-sid SID   env TWILIO_MESSAGING_SERVICE_SID (instead of --twilio-from)
  --sms-allowed-countries LIST env SMS_ALLOWED_COUNTRIES: the calling codes SMS may go to, like +1,+44 (recommended;
                               unset: every country but the non-geographic codes); match Twilio's SMS Geo Permissions
  --ingest-keys-file FILE      first version of the ingest keys secret: lines of lab-name:sha256-hex-of-key
  --rotate-secrets             add the given secrets (SMTP_PASSWORD, TWILIO_AUTH_TOKEN, --ingest-keys-file) as new
                               versions of secrets that have one already; without it a re-run never adds a version.
                               The suppression key is never rotated: a new one would forget every opt-out
  --max-delivery-attempts N    push attempts before a message is dead-lettered (5-100; default 100: an outage of about
                               15 h 40 min parks nothing; a message that can never be sent is parked at once)
  --notify-log firestore|off   env NOTIFY_LOG (default firestore): the push services share a notification log in
                               Firestore, so no email or SMS goes out twice across instances; off: each push service
                               runs on one instance at most (--max-instances=1), as a log per instance cannot be shared
  --firestore-database NAME    the Native-mode Firestore database of the log (default '(default)'; created in the region
                               if missing; a database in Datastore mode is refused)
  --push-ingress INGRESS       ingress of the push services: internal (default) or internal-and-cloud-load-balancing
                               (a load balancer in front of them; docs/production.md, "Past one region")
  --email-push-url URL         where Pub/Sub pushes email-service's messages, and their token's audience (default: the
  --sms-push-url URL           service's own URL; a load balancer's URL when one is in front); given on every run
  --templates-bucket BUCKET    the clinic's templates: a Cloud Storage bucket mounted read-only at /templates in both
                               push services (TEMPLATES_DIR=/templates), readable by their accounts; given on every run
  --dry-run                    print the gcloud commands instead of running them
  -h, --help                   this text
EOF
}

die() {
    printf 'deploy.sh: %s\n' "$*" >&2
    exit 2
}

note() {
    printf 'deploy.sh: %s\n' "$*" >&2
}

# --- Settings ---------------------------------------------------------------

DRY_RUN=0
REBUILD=0
PROJECT=${GOOGLE_CLOUD_PROJECT:-}
REGION=${REGION:-us-central1}
TAG=${IMAGE_TAG:-}
REPOSITORY=labrelay
SMTP_URL=${SMTP_URL:-}
SMTP_USERNAME=${SMTP_USERNAME:-}
EMAIL_FROM=${EMAIL_FROM:-}
EMAIL_REPLY_TO=${EMAIL_REPLY_TO:-}
TWILIO_ACCOUNT_SID=${TWILIO_ACCOUNT_SID:-}
TWILIO_FROM=${TWILIO_FROM:-}
TWILIO_MESSAGING_SERVICE_SID=${TWILIO_MESSAGING_SERVICE_SID:-}
SMS_ALLOWED_COUNTRIES=${SMS_ALLOWED_COUNTRIES:-}
INGEST_KEYS_FILE=
MAX_DELIVERY_ATTEMPTS=100
NOTIFY_LOG=${NOTIFY_LOG:-firestore}
FIRESTORE_DATABASE='(default)'
ROTATE_SECRETS=0
PUSH_INGRESS=internal
EMAIL_PUSH_URL=
SMS_PUSH_URL=
TEMPLATES_BUCKET=

set_option() {
    case $1 in
        --project) PROJECT=$2 ;;
        --region) REGION=$2 ;;
        --tag) TAG=$2 ;;
        --repository) REPOSITORY=$2 ;;
        --smtp-url) SMTP_URL=$2 ;;
        --smtp-username) SMTP_USERNAME=$2 ;;
        --email-from) EMAIL_FROM=$2 ;;
        --email-reply-to) EMAIL_REPLY_TO=$2 ;;
        --twilio-account-sid) TWILIO_ACCOUNT_SID=$2 ;;
        --twilio-from) TWILIO_FROM=$2 ;;
        --twilio-messaging-service-sid) TWILIO_MESSAGING_SERVICE_SID=$2 ;;
        --sms-allowed-countries) SMS_ALLOWED_COUNTRIES=$2 ;;
        --ingest-keys-file) INGEST_KEYS_FILE=$2 ;;
        --max-delivery-attempts) MAX_DELIVERY_ATTEMPTS=$2 ;;
        --notify-log) NOTIFY_LOG=$2 ;;
        --firestore-database) FIRESTORE_DATABASE=$2 ;;
        --push-ingress) PUSH_INGRESS=$2 ;;
        --email-push-url) EMAIL_PUSH_URL=$2 ;;
        --sms-push-url) SMS_PUSH_URL=$2 ;;
        --templates-bucket) TEMPLATES_BUCKET=$2 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
}

while (($#)); do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --rebuild) REBUILD=1 ;;
        --rotate-secrets) ROTATE_SECRETS=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        --*=*) set_option "${1%%=*}" "${1#*=}" ;;
        --*)
            (($# >= 2)) || die "$1 needs a value"
            set_option "$1" "$2"
            shift
            ;;
        *) die "unexpected argument $1 (see --help)" ;;
    esac
    shift
done

# A relative path given by the caller is relative to where they stand.
if [[ -n $INGEST_KEYS_FILE && $INGEST_KEYS_FILE != /* ]]; then
    INGEST_KEYS_FILE=$PWD/$INGEST_KEYS_FILE
fi

# Everything below runs from the repository root, found from this file's
# path with shell built-ins only (a dry run needs nothing but bash).
case ${BASH_SOURCE[0]} in
    */*) cd "${BASH_SOURCE[0]%/*}/../.." ;;
    *) cd ../.. ;;
esac
[[ -f Cargo.toml && -f deploy/cloudrun/Dockerfile ]] || die "cannot find the repository root from $0"

# The `version` of the root package, read without external tools.
cargo_version() {
    local line in_package=0
    while IFS= read -r line; do
        case $line in
            '[package]') in_package=1 ;;
            '['*) in_package=0 ;;
            version*=*)
                if ((in_package)); then
                    line=${line#*\"}
                    printf '%s\n' "${line%%\"*}"
                    return 0
                fi
                ;;
        esac
    done <Cargo.toml
    return 1
}

[[ -n $PROJECT ]] || die "--project is required"
[[ $PROJECT =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] || die "--project must be a project id (like my-clinic-123), not '$PROJECT'"
[[ $REGION =~ ^[a-z]+-[a-z]+[0-9]+$ ]] || die "--region must be a region (like europe-west1), not '$REGION'"
[[ -n $TAG ]] || TAG=$(cargo_version) || die "cannot read the version from Cargo.toml; pass --tag"
[[ $TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "--tag must be a Docker tag, not '$TAG'"
[[ $REPOSITORY =~ ^[a-z][a-z0-9-]{0,62}$ ]] || die "--repository must be lower-case letters, digits and dashes"
if [[ ! $MAX_DELIVERY_ATTEMPTS =~ ^[0-9]+$ ]] || ((MAX_DELIVERY_ATTEMPTS < 5 || MAX_DELIVERY_ATTEMPTS > 100)); then
    die "--max-delivery-attempts must be between 5 and 100"
fi
# A SQLite log would vanish with its instance; only Firestore is shared.
case $NOTIFY_LOG in
    off) NOTIFY_LOG= ;;
    firestore) ;;
    *) die "--notify-log must be firestore or off on Cloud Run, not '$NOTIFY_LOG'" ;;
esac
[[ $FIRESTORE_DATABASE == '(default)' || $FIRESTORE_DATABASE =~ ^[a-z][a-z0-9-]{2,61}[a-z0-9]$ ]] ||
    die "--firestore-database must be (default) or a database id (like labrelay), not '$FIRESTORE_DATABASE'"
case $PUSH_INGRESS in
    internal | internal-and-cloud-load-balancing) ;;
    *) die "--push-ingress must be internal or internal-and-cloud-load-balancing, not '$PUSH_INGRESS'" ;;
esac
for url in "$EMAIL_PUSH_URL" "$SMS_PUSH_URL"; do
    [[ -z $url || $url =~ ^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[^[:space:],]*)?$ ]] ||
        die "a push URL must be https://host[/path], not '$url'"
done

TEMPLATES_BUCKET=${TEMPLATES_BUCKET#gs://}
[[ -z $TEMPLATES_BUCKET || $TEMPLATES_BUCKET =~ ^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$ ]] ||
    die "--templates-bucket must be a bucket name (like my-clinic-templates), not '$TEMPLATES_BUCKET'"

# A provider setting that must be there. A dry run shows a placeholder
# instead of stopping, so the whole plan can be read before anything is set.
require() {
    local name=$1 flag=$2
    if [[ -z ${!name} ]]; then
        ((DRY_RUN)) || die "$flag (or $name in the environment) is required"
        note "$name is not set; the plan shows <$name> and a real run stops here"
        printf -v "$name" '<%s>' "$name"
    fi
}
require SMTP_URL --smtp-url
require TWILIO_ACCOUNT_SID --twilio-account-sid
if [[ -z $TWILIO_FROM && -z $TWILIO_MESSAGING_SERVICE_SID ]]; then
    require TWILIO_FROM --twilio-from
fi
[[ -z $TWILIO_FROM || -z $TWILIO_MESSAGING_SERVICE_SID ]] ||
    die "set --twilio-from or --twilio-messaging-service-sid, not both"
case $SMTP_URL in
    smtp://* | smtps://* | '<SMTP_URL>') ;;
    *) die "--smtp-url must be smtp:// or smtps:// on Cloud Run (a file:// outbox would vanish with the instance)" ;;
esac
[[ $SMTP_URL != *@* ]] || die "--smtp-url must not carry credentials: use --smtp-username and SMTP_PASSWORD"
# The sms-service checks each code; this catches the shape before deploying.
SMS_ALLOWED_COUNTRIES=${SMS_ALLOWED_COUNTRIES//[[:space:]]/}
if [[ -z $SMS_ALLOWED_COUNTRIES ]]; then
    note "SMS_ALLOWED_COUNTRIES is not set: SMS may go to any country but the non-geographic codes;" \
        "pass --sms-allowed-countries with the calling codes your clinics serve (like +1,+44)" \
        "and limit Twilio's SMS Geo Permissions to the same countries"
elif [[ ! $SMS_ALLOWED_COUNTRIES =~ ^\+[1-9][0-9]{0,2}(,\+[1-9][0-9]{0,2})*$ ]]; then
    die "--sms-allowed-countries must be calling codes separated by commas, like +1,+44, not '$SMS_ALLOWED_COUNTRIES'"
fi
if [[ -n $INGEST_KEYS_FILE ]]; then
    [[ -r $INGEST_KEYS_FILE ]] || die "cannot read --ingest-keys-file $INGEST_KEYS_FILE"
    # As the service reads it: '#' starts a comment, blank lines are skipped.
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%%#*}
        [[ $line =~ ^[[:space:]]*$ || $line =~ ^[[:space:]]*[^[:space:]].*:[[:space:]]*[0-9a-fA-F]{64}[[:space:]]*$ ]] ||
            die "$INGEST_KEYS_FILE: each line must be lab-name:sha256-hex-of-key (the hash, never the key)"
    done <"$INGEST_KEYS_FILE"
fi

# --- Names (docs/production.md lists them) -----------------------------------

TOPIC=new-lab-report
DEAD_LETTER_TOPIC=new-lab-report-dead-letter
DEAD_LETTER_SUB=new-lab-report-dead-letter-sub
IMAGE=$REGION-docker.pkg.dev/$PROJECT/$REPOSITORY/labrelay:$TAG
SA_DOMAIN=$PROJECT.iam.gserviceaccount.com
INGEST_SA=labrelay-lab-report@$SA_DOMAIN
EMAIL_SA=labrelay-email@$SA_DOMAIN
SMS_SA=labrelay-sms@$SA_DOMAIN
WEBHOOKS_SA=labrelay-sms-webhooks@$SA_DOMAIN
INVOKER_SA=pubsub-cloud-run-invoker@$SA_DOMAIN
INGEST_KEYS_SECRET=labrelay-ingest-api-keys
INGEST_KEYS_PATH=/secrets/ingest/keys
SMTP_SECRET=labrelay-smtp-password
TWILIO_SECRET=labrelay-twilio-auth-token
SUPPRESSION_SECRET=labrelay-suppression-key
APIS=(run pubsub cloudbuild artifactregistry secretmanager iam)
[[ -z $NOTIFY_LOG ]] || APIS+=(firestore)
if [[ -n $NOTIFY_LOG && $FIRESTORE_DATABASE != '(default)' ]]; then
    NOTIFY_LOG=firestore://projects/$PROJECT/databases/$FIRESTORE_DATABASE
fi
# One number for how long a push may take: the push subscriptions' ack
# deadline (for push, the HTTP timeout) and the push services' request
# timeout. On Cloud Run a push is answered only once its work is done
# (PUSH_ANSWER=when-done: claim, send and record, parking), so Pub/Sub never
# redelivers a push its service is still running, and Cloud Run never cuts
# one Pub/Sub still waits for. The longest is an email whose SMTP server
# takes SMTP_DATA_TIMEOUT_SECS to answer its data: 10 s claim + 40 s up to
# DATA + 300 s + 5 s + 10 s record + 5 s + 10 s parking + 5 s to read the
# push = 385 s. 600 s is Pub/Sub's longest ack deadline.
PUSH_TIMEOUT=600
SMTP_DATA_TIMEOUT_SECS=300
# At most this many instances of each push service: several need the shared
# notification log, or one push may be sent twice by two instances.
PUSH_MAX_INSTANCES=5
[[ -n $NOTIFY_LOG ]] || PUSH_MAX_INSTANCES=1

# --- Running gcloud ----------------------------------------------------------

# Commands are shown on the original stdout (fd 3), so that a look-up whose
# value is captured with $(...) is still shown.
exec 3>&1

# Prints a command as one line that can be pasted into a shell; with
# SHOW_SUFFIX set, that text ends the line.
show() {
    local line=+ arg
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z0-9_./:=@,+%^-]+$ ]]; then
            line+=" $arg"
        else
            line+=" '${arg//\'/\'\\\'\'}'"
        fi
    done
    printf '%s%s\n' "$line" "${SHOW_SUFFIX:-}" >&3
}

step() {
    printf '\n# %s\n' "$*" >&3
}

# A change: shown, then run (not in a dry run).
change() {
    show gcloud "$@"
    if ((DRY_RUN)); then return 0; fi
    gcloud "$@"
}

# A look-up: succeeds when the resource exists, fails when gcloud says it
# does not (NOT_FOUND), and stops the script on any other failure (a
# permission, the network, a quota): taken for "not found", such a failure
# would create what exists, or add a revoked key back as a secret's latest
# version. "Not found" in a dry run.
exists() {
    show gcloud "$@"
    if ((DRY_RUN)); then return 1; fi
    local error
    if error=$(gcloud "$@" 2>&1 >/dev/null); then return 0; fi
    if [[ $error != *PERMISSION_DENIED* && $error != *UNAUTHENTICATED* ]]; then
        case $error in
            *NOT_FOUND* | *"not found"* | *"Cannot find"* | *"does not exist"*) return 1 ;;
        esac
    fi
    die "looking up a resource failed, so the script stops rather than guess: gcloud $*: ${error//$'\n'/ }"
}

# A look-up that prints a value; a dry run prints the placeholder $1.
value() {
    local placeholder=$1
    shift
    show gcloud "$@"
    if ((DRY_RUN)); then
        printf '%s\n' "$placeholder"
        return 0
    fi
    gcloud "$@"
}

# An IAM binding: adding one that exists changes nothing. A service account
# created seconds ago can be unknown to IAM for a while, so failures are
# retried for about a minute.
grant() {
    show gcloud "$@"
    if ((DRY_RUN)); then return 0; fi
    local attempt
    for attempt in 1 2 3 4 5 6; do
        if gcloud "$@" >/dev/null; then return 0; fi
        ((attempt < 6)) || return 1
        note "retrying in 10 s: IAM changes take a moment to propagate"
        sleep 10
    done
}

if ((!DRY_RUN)); then
    command -v gcloud >/dev/null || die "gcloud is not installed (https://cloud.google.com/sdk/docs/install); --dry-run works without it"
    export CLOUDSDK_CORE_DISABLE_PROMPTS=1
fi

P=--project=$PROJECT
R=--region=$REGION

# --- 0. The deployer's permissions --------------------------------------------

# What the script does, as permission|the predefined role that grants it
# (docs/production.md lists the roles with Google's documentation).
PERMISSIONS=(
    "serviceusage.services.enable|roles/serviceusage.serviceUsageAdmin"
    "artifactregistry.repositories.create|roles/artifactregistry.admin"
    "cloudbuild.builds.create|roles/cloudbuild.builds.editor"
    "storage.buckets.create|roles/storage.admin"
    "storage.objects.create|roles/storage.admin"
    "logging.logEntries.list|roles/viewer"
    "pubsub.topics.create|roles/pubsub.admin"
    "pubsub.topics.update|roles/pubsub.admin"
    "pubsub.topics.setIamPolicy|roles/pubsub.admin"
    "pubsub.subscriptions.create|roles/pubsub.admin"
    "pubsub.subscriptions.update|roles/pubsub.admin"
    "pubsub.subscriptions.setIamPolicy|roles/pubsub.admin"
    "iam.serviceAccounts.create|roles/iam.serviceAccountAdmin"
    "iam.serviceAccounts.setIamPolicy|roles/iam.serviceAccountAdmin"
    "iam.serviceAccounts.actAs|roles/iam.serviceAccountUser"
    "secretmanager.secrets.create|roles/secretmanager.admin"
    "secretmanager.secrets.setIamPolicy|roles/secretmanager.admin"
    "secretmanager.versions.add|roles/secretmanager.admin"
    "run.services.create|roles/run.admin"
    "run.services.setIamPolicy|roles/run.admin"
    "resourcemanager.projects.setIamPolicy|roles/resourcemanager.projectIamAdmin"
)
[[ -z $NOTIFY_LOG ]] || PERMISSIONS+=("datastore.databases.create|roles/datastore.owner")
[[ -z $TEMPLATES_BUCKET ]] || PERMISSIONS+=("storage.buckets.setIamPolicy|roles/storage.admin")

# Asks Resource Manager which of PERMISSIONS the logged-in account holds on
# the project (testIamPermissions) and stops, naming every one missing with
# its role, before anything is changed.
check_permissions() {
    local entry body='' token answer missing=()
    for entry in "${PERMISSIONS[@]}"; do
        body+=${body:+,}\"${entry%%|*}\"
    done
    step "The deployer's permissions on $PROJECT (testIamPermissions, ${#PERMISSIONS[@]} permissions)"
    if ((DRY_RUN)); then
        printf '# (a real run asks %s)\n' "https://cloudresourcemanager.googleapis.com/v1/projects/$PROJECT:testIamPermissions" >&3
        return 0
    fi
    command -v curl >/dev/null || die "curl is needed to check the deployer's permissions"
    token=$(gcloud auth print-access-token) || die "gcloud has no logged-in account: run gcloud auth login"
    answer=$(curl --silent --show-error --max-time 30 -X POST \
        -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        --data "{\"permissions\":[$body]}" \
        "https://cloudresourcemanager.googleapis.com/v1/projects/$PROJECT:testIamPermissions") ||
        die "could not ask Resource Manager for the deployer's permissions"
    [[ $answer != *'"error"'* ]] || die "checking the deployer's permissions failed: ${answer//$'\n'/ }"
    for entry in "${PERMISSIONS[@]}"; do
        [[ $answer == *"\"${entry%%|*}\""* ]] || missing+=("${entry%%|*} (${entry#*|})")
    done
    if ((${#missing[@]})); then
        local IFS=$'\n'
        die "the logged-in account lacks these permissions on $PROJECT (grant the roles named, or Owner; docs/production.md lists them):"$'\n'"${missing[*]}"
    fi
}
check_permissions

# Brings the existing topic or subscription ($1) named $2 to the kit's
# settings: each further argument is field|wanted value|the update flag that
# sets it (no flag: a setting no update can change, which stops the script).
# Prints every difference, then updates what differs in one call. A
# resource without the kit's label was made by hand or by the lab: it is
# taken over with a warning.
converge() {
    local kind=$1 name=$2
    shift 2
    local entry fields='' field
    for entry in "$@"; do
        fields+=${fields:+,}${entry%%|*}
    done
    local current
    current=$(value "" pubsub "${kind}s" describe "$name" "$P" --format="value[separator='|'](labels.app,$fields)")
    ((DRY_RUN)) && return 0
    local label=${current%%|*} rest=${current#*|} have wanted flag flags=()
    [[ $label == labrelay ]] ||
        note "WARNING: $kind $name was not created by this kit (no label app=labrelay; the lab's?): bringing it to the kit's settings"
    for entry in "$@"; do
        field=${entry%%|*}
        entry=${entry#*|}
        wanted=${entry%%|*}
        flag=${entry#*|}
        have=${rest%%|*}
        rest=${rest#*|}
        [[ $have != "$wanted" ]] || continue
        [[ -n $flag ]] || die "$kind $name has $field '$have', not '$wanted', which no update can change: delete it (after draining it) and run again"
        note "$kind $name: $field '$have' -> '$wanted'"
        flags+=("$flag")
    done
    if ((${#flags[@]})); then
        change pubsub "${kind}s" update "$name" "$P" "${flags[@]}"
    fi
}

# --- 1. APIs, project number, Pub/Sub service agent --------------------------

step "APIs (enabling an enabled API changes nothing)"
change services enable "${APIS[@]/%/.googleapis.com}" "$P"

step "Project number, for the Pub/Sub service agent's address"
PROJECT_NUMBER=$(value PROJECT_NUMBER projects describe "$PROJECT" --format='value(projectNumber)')
[[ $PROJECT_NUMBER =~ ^[0-9]+$ ]] || ((DRY_RUN)) || die "unexpected project number '$PROJECT_NUMBER'"
PUBSUB_AGENT=service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com
# Pub/Sub creates its agent lazily; the bindings below need it now.
change beta services identity create --service=pubsub.googleapis.com "$P"

# --- 2. Image -----------------------------------------------------------------

step "Artifact Registry repository and the image (Cloud Build)"
if ! exists artifacts repositories describe "$REPOSITORY" --location="$REGION" "$P"; then
    change artifacts repositories create "$REPOSITORY" --location="$REGION" "$P" \
        --repository-format=docker --description='labrelay images' --labels=app=labrelay
fi
# New projects build as the Compute Engine default service account, which an
# organization policy may leave without roles: give whichever account Cloud
# Build uses the role Google names for it.
BUILD_SA=$(value "BUILD_SA@developer.gserviceaccount.com" builds get-default-service-account "$P" \
    --format='value(serviceAccountEmail)')
BUILD_SA=${BUILD_SA##*/}
grant projects add-iam-policy-binding "$PROJECT" --condition=None \
    --member="serviceAccount:$BUILD_SA" --role=roles/cloudbuild.builds.builder
if ((REBUILD)) || ! exists artifacts docker images describe "$IMAGE"; then
    change builds submit . "$P" --config=deploy/cloudrun/cloudbuild.yaml \
        --ignore-file=deploy/cloudrun/.gcloudignore --substitutions=_IMAGE="$IMAGE"
else
    note "$IMAGE exists; not rebuilding it (--rebuild forces a build, --tag picks another)"
fi

# --- 3. Topics ------------------------------------------------------------------

step "Topics, and a pull subscription that keeps dead letters for 31 days (a topic alone drops them)"
for topic in "$TOPIC" "$DEAD_LETTER_TOPIC"; do
    if ! exists pubsub topics describe "$topic" "$P"; then
        # Lab results and owners' addresses stay stored in the region.
        change pubsub topics create "$topic" "$P" --labels=app=labrelay \
            --message-storage-policy-allowed-regions="$REGION"
    else
        converge topic "$topic" \
            "labels.app|labrelay|--update-labels=app=labrelay" \
            "messageStoragePolicy.allowedPersistenceRegions|$REGION|--message-storage-policy-allowed-regions=$REGION"
    fi
done
DEAD_LETTER_SUB_SETTINGS=(
    "topic|projects/$PROJECT/topics/$DEAD_LETTER_TOPIC|"
    "ackDeadlineSeconds|60|--ack-deadline=60"
    "messageRetentionDuration|2678400s|--message-retention-duration=31d"
    "expirationPolicy.ttl||--expiration-period=never"
    "labels.app|labrelay|--update-labels=app=labrelay"
)
if ! exists pubsub subscriptions describe "$DEAD_LETTER_SUB" "$P"; then
    change pubsub subscriptions create "$DEAD_LETTER_SUB" "$P" --topic="$DEAD_LETTER_TOPIC" \
        --ack-deadline=60 --message-retention-duration=31d --expiration-period=never --labels=app=labrelay
else
    converge subscription "$DEAD_LETTER_SUB" "${DEAD_LETTER_SUB_SETTINGS[@]}"
fi

# --- 4. Service accounts ------------------------------------------------------

step "Service accounts: one per service, and the identity Pub/Sub pushes with"
ACCOUNTS=(
    "$INGEST_SA|labrelay lab-report-service"
    "$EMAIL_SA|labrelay email-service"
    "$SMS_SA|labrelay sms-service"
)
# Twilio's webhooks are served only over the shared log, where they keep
# what they learn.
[[ -z $NOTIFY_LOG ]] || ACCOUNTS+=("$WEBHOOKS_SA|labrelay sms-webhooks")
ACCOUNTS+=("$INVOKER_SA|Cloud Run Pub/Sub Invoker")
for account in "${ACCOUNTS[@]}"; do
    email=${account%%|*}
    if ! exists iam service-accounts describe "$email" "$P"; then
        change iam service-accounts create "${email%%@*}" "$P" --display-name="${account#*|}"
    fi
done
grant pubsub topics add-iam-policy-binding "$TOPIC" "$P" \
    --member="serviceAccount:$INGEST_SA" --role=roles/pubsub.publisher

if [[ -n $NOTIFY_LOG ]]; then
    step "Firestore: the notification log both push services share (docs/production.md)"
    if ! exists firestore databases describe --database="$FIRESTORE_DATABASE" "$P"; then
        change firestore databases create --database="$FIRESTORE_DATABASE" --location="$REGION" \
            --type=firestore-native "$P"
    else
        mode=$(value FIRESTORE_NATIVE firestore databases describe --database="$FIRESTORE_DATABASE" "$P" --format='value(type)')
        [[ $mode == FIRESTORE_NATIVE ]] ||
            die "Firestore database $FIRESTORE_DATABASE is in $mode mode; the notification log needs Native mode: pass --firestore-database labrelay to use (and create) a database of its own"
    fi
    for account in "$EMAIL_SA" "$SMS_SA" "$WEBHOOKS_SA"; do
        grant projects add-iam-policy-binding "$PROJECT" --condition=None \
            --member="serviceAccount:$account" --role=roles/datastore.user
    done
fi

# --- 5. Secrets -----------------------------------------------------------------

# Creates the secret if missing and, if it has no version yet, adds the first
# one: from the environment variable $2 (on standard input, never on a
# command line) or from the file $3. A secret that has a version gets a new
# one only with --rotate-secrets (docs/production.md, "Rotating"), so a
# re-run never brings back an old key. The service accounts after $3 may
# read it.
secret() {
    local name=$1 variable=$2 file=$3 reader given=0
    shift 3
    [[ -n $variable && -n ${!variable:-} ]] || [[ -n $file ]] && given=1
    if ! exists secrets describe "$name" "$P"; then
        # Automatic replication: credentials, not personal data, and a
        # replication policy cannot be changed later (another region).
        change secrets create "$name" "$P" --replication-policy=automatic --labels=app=labrelay
    fi
    local add=1
    if exists secrets versions describe latest --secret="$name" "$P"; then
        add=$((ROTATE_SECRETS && given))
        if ((given && !ROTATE_SECRETS)); then
            note "secret $name has a version already; what was given for it is not added (--rotate-secrets adds it as the new latest version)"
        fi
    fi
    if ((add)); then
        if [[ -n $variable && -n ${!variable:-} ]]; then
            # Shown with the variable's name; its value goes to standard input.
            SHOW_SUFFIX=" <<<\"\$$variable\"" show gcloud secrets versions add "$name" "$P" --data-file=-
            if ((!DRY_RUN)); then
                printf '%s' "${!variable}" | gcloud secrets versions add "$name" "$P" --data-file=-
            fi
        elif [[ -n $file ]]; then
            change secrets versions add "$name" "$P" --data-file="$file"
        else
            local how="pass --ingest-keys-file"
            [[ -z $variable ]] || how="set $variable in the environment"
            ((DRY_RUN)) || die "secret $name has no version yet: $how and run again"
            note "secret $name has no version yet: a real run needs you to $how"
        fi
    fi
    for reader in "$@"; do
        grant secrets add-iam-policy-binding "$name" "$P" \
            --member="serviceAccount:$reader" --role=roles/secretmanager.secretAccessor
    done
}

# $1 bytes from /dev/urandom as lower-case hex, with bash alone: read one
# byte at a time in the C locale (a NUL byte reads as the empty string,
# whose code is 0).
random_hex() {
    local LC_ALL=C count=$1 byte code hex=
    while ((count-- > 0)); do
        IFS= read -r -d '' -n 1 byte || return 1
        printf -v code '%d' "'$byte"
        printf -v hex '%s%02x' "$hex" "$((code & 255))"
    done </dev/urandom
    printf '%s\n' "$hex"
}

# A secret nobody types: the key the push services hash suppressed
# recipients with. Created with a first version of 32 random bytes (hex) on
# the first run, handed to Secret Manager on standard input and never
# shown; readable by each account after $1. Never given a new version, not
# even with --rotate-secrets: under a new key the stored hashes match no
# one, and every opt-out would be forgotten (docs/production.md).
generated_secret() {
    local name=$1 reader
    shift
    if ! exists secrets describe "$name" "$P"; then
        change secrets create "$name" "$P" --replication-policy=automatic --labels=app=labrelay
    fi
    if ! exists secrets versions describe latest --secret="$name" "$P"; then
        # Shown as what the services read it as; the value is made here.
        SHOW_SUFFIX=" <<<\"\$SUPPRESSION_KEY\"" show gcloud secrets versions add "$name" "$P" --data-file=-
        if ((!DRY_RUN)); then
            local key
            if ! key=$(random_hex 32) || [[ ! $key =~ ^[0-9a-f]{64}$ ]]; then
                die "could not read 32 bytes from /dev/urandom"
            fi
            printf '%s' "$key" | gcloud secrets versions add "$name" "$P" --data-file=- >/dev/null
        fi
    elif ((ROTATE_SECRETS)); then
        note "secret $name is not rotated: a new key would forget every suppression"
    fi
    for reader in "$@"; do
        grant secrets add-iam-policy-binding "$name" "$P" \
            --member="serviceAccount:$reader" --role=roles/secretmanager.secretAccessor
    done
}

step "Secrets in Secret Manager, each readable by its service alone (the suppression key by both push services)"
secret "$INGEST_KEYS_SECRET" "" "$INGEST_KEYS_FILE" "$INGEST_SA"
if [[ -n $SMTP_USERNAME ]]; then
    secret "$SMTP_SECRET" SMTP_PASSWORD "" "$EMAIL_SA"
fi
# The webhooks service checks Twilio's signatures with the token and
# suppresses STOP's sender under the push services' key.
webhooks_readers=()
[[ -z $NOTIFY_LOG ]] || webhooks_readers=("$WEBHOOKS_SA")
secret "$TWILIO_SECRET" TWILIO_AUTH_TOKEN "" "$SMS_SA" "${webhooks_readers[@]}"
generated_secret "$SUPPRESSION_SECRET" "$EMAIL_SA" "$SMS_SA" "${webhooks_readers[@]}"

if [[ -n $TEMPLATES_BUCKET ]]; then
    step "The clinic's templates: gs://$TEMPLATES_BUCKET, readable by both push services (docs/templates.md)"
    for account in "$EMAIL_SA" "$SMS_SA"; do
        grant storage buckets add-iam-policy-binding "gs://$TEMPLATES_BUCKET" "$P" \
            --member="serviceAccount:$account" --role=roles/storage.objectViewer
    done
fi

# --- 6. Services --------------------------------------------------------------

# KEY=VALUE arguments as one --set-env-vars value. gcloud splits it on
# commas, so if a value has one (a display name) another delimiter is
# declared up front (gcloud topic escaping).
env_list() {
    local item delimiter=, joined=
    for item in "$@"; do
        [[ $item != *,* ]] || delimiter=';;'
    done
    for item in "$@"; do
        [[ $delimiter == , || $item != *';;'* ]] || die "a setting may not contain both ',' and ';;': $item"
        joined+=${joined:+$delimiter}$item
    done
    [[ $delimiter == , ]] || joined="^$delimiter^$joined"
    printf '%s\n' "$joined"
}

service_exists() {
    exists run services describe "$1" "$P" "$R"
}

service_url() {
    value "https://$1-$PROJECT_NUMBER.$REGION.run.app" run services describe "$1" "$P" "$R" --format='value(status.url)'
}

# Same for all three: one image, the service chosen by its subcommand.
COMMON=("$P" "$R" --image="$IMAGE" --command=/labrelay --cpu=1 --memory=512Mi --cpu-boost
    --min-instances=0 --labels=app=labrelay)

# The public service's metrics on a port of their own, which Cloud Run does
# not route: the internet reaches POST / and /healthz only; a sidecar can
# scrape it (docs/production.md, "Metrics").
METRICS_PORT=9464
step "lab-report-service: public, since labs POST to it; each lab is checked by its API key, at most 50 reports/s each"
change run deploy lab-report-service "${COMMON[@]}" --args=lab-report-service \
    --service-account="$INGEST_SA" --allow-unauthenticated --ingress=all \
    --concurrency=80 --timeout=30s --max-instances=10 \
    --set-env-vars="$(env_list "GOOGLE_CLOUD_PROJECT=$PROJECT" "LAB_REPORT_TOPIC=$TOPIC" \
        "INGEST_API_KEYS_FILE=$INGEST_KEYS_PATH" "METRICS_PORT=$METRICS_PORT")" \
    --set-secrets="$INGEST_KEYS_PATH=$INGEST_KEYS_SECRET:latest"

# The push services verify Pub/Sub's token against their own URL
# (PUSH_AUDIENCE), known once the service exists: a re-run passes it with the
# other settings; a first run deploys with an audience no token carries (the
# services refuse to start without one, and no subscription pushes yet) and
# sets the URL right after.
PENDING_AUDIENCE=https://pending-first-deploy.invalid
push_service() {
    local name=$1 account=$2 secrets=$3 push_url=$4
    shift 4
    local url=
    if service_exists "$name"; then
        url=$(service_url "$name")
    fi
    local settings=("GOOGLE_CLOUD_PROJECT=$PROJECT" "$@" "PUSH_ALLOWED_SERVICE_ACCOUNTS=$INVOKER_SA"
        "DEAD_LETTER_TOPIC=projects/$PROJECT/topics/$DEAD_LETTER_TOPIC"
        "PUSH_AUDIENCE=${push_url:-${url:-$PENDING_AUDIENCE}}")
    local secret_flag=--clear-secrets
    [[ -z $secrets ]] || secret_flag=--set-secrets=$secrets
    # Ingress "internal" still admits Pub/Sub push from this project to the
    # run.app URL; the internet cannot reach these services at all.
    change run deploy "$name" "${COMMON[@]}" --args="$name" \
        --service-account="$account" --no-allow-unauthenticated --ingress="$PUSH_INGRESS" \
        --concurrency=20 --timeout="${PUSH_TIMEOUT}s" --max-instances="$PUSH_MAX_INSTANCES" \
        --set-env-vars="$(env_list "${settings[@]}")" "$secret_flag" "${TEMPLATE_VOLUME[@]}"
    if [[ -n $push_url ]]; then
        # Behind a load balancer: Cloud Run's own IAM check accepts tokens
        # for the balancer's URL too.
        change run services update "$name" "$P" "$R" --add-custom-audiences="$push_url"
    elif [[ -z $url ]]; then
        url=$(service_url "$name")
        change run services update "$name" "$P" "$R" --update-env-vars="PUSH_AUDIENCE=$url"
    fi
    PUSH_URL=${push_url:-$url}
}

# The clinic's templates, mounted read-only. Volumes are cleared on every
# run, so a re-run replaces the mount rather than adding a second one, and a
# run without --templates-bucket takes it away with TEMPLATES_DIR.
TEMPLATE_VOLUME=(--clear-volumes --clear-volume-mounts)
TEMPLATE_SETTINGS=()
if [[ -n $TEMPLATES_BUCKET ]]; then
    TEMPLATE_VOLUME+=(--add-volume="name=templates,type=cloud-storage,bucket=$TEMPLATES_BUCKET,readonly=true"
        "--add-volume-mount=volume=templates,mount-path=/templates")
    TEMPLATE_SETTINGS=(TEMPLATES_DIR=/templates)
fi

# Both push services hash suppressed recipients with the one key.
suppression_secret="SUPPRESSION_KEY=$SUPPRESSION_SECRET:latest"

step "email-service: private, reached by Pub/Sub push only"
email_settings=("SMTP_URL=$SMTP_URL" "SMTP_DATA_TIMEOUT_SECS=$SMTP_DATA_TIMEOUT_SECS" "${TEMPLATE_SETTINGS[@]}")
[[ -z $NOTIFY_LOG ]] || email_settings+=("NOTIFY_LOG=$NOTIFY_LOG")
[[ -z $SMTP_USERNAME ]] || email_settings+=("SMTP_USERNAME=$SMTP_USERNAME")
[[ -z $EMAIL_FROM ]] || email_settings+=("EMAIL_FROM=$EMAIL_FROM")
[[ -z $EMAIL_REPLY_TO ]] || email_settings+=("EMAIL_REPLY_TO=$EMAIL_REPLY_TO")
email_secrets=$suppression_secret
[[ -z $SMTP_USERNAME ]] || email_secrets="SMTP_PASSWORD=$SMTP_SECRET:latest,$email_secrets"
push_service email-service "$EMAIL_SA" "$email_secrets" "$EMAIL_PUSH_URL" "${email_settings[@]}"
email_url=$PUSH_URL

# Twilio's calls (delivery receipts, STOP and START) reach a service of
# their own, public, which the sms-service's messages name as PUBLIC_URL:
# Twilio signs every call and the service checks it, so it admits anyone
# (--allow-unauthenticated). It exists before the sms-service, which needs
# its URL. Its own PUBLIC_URL, which signatures are checked against, is
# known once it exists: a first run deploys it with a URL no signature
# matches and sets the real one right after, as for PUSH_AUDIENCE.
PENDING_PUBLIC_URL=https://pending-first-deploy.invalid
webhooks_url=
if [[ -n $NOTIFY_LOG ]]; then
    step "sms-webhooks: public, for Twilio's delivery receipts and STOP/START, each call checked against Twilio's signature"
    if service_exists sms-webhooks; then
        webhooks_url=$(service_url sms-webhooks)
    fi
    change run deploy sms-webhooks "${COMMON[@]}" --args=sms-webhooks \
        --service-account="$WEBHOOKS_SA" --allow-unauthenticated --ingress=all \
        --concurrency=20 --timeout=30s --max-instances=2 \
        --set-env-vars="$(env_list "GOOGLE_CLOUD_PROJECT=$PROJECT" "NOTIFY_LOG=$NOTIFY_LOG" \
            "PUBLIC_URL=${webhooks_url:-$PENDING_PUBLIC_URL}")" \
        --set-secrets="TWILIO_AUTH_TOKEN=$TWILIO_SECRET:latest,$suppression_secret"
    if [[ -z $webhooks_url ]]; then
        webhooks_url=$(service_url sms-webhooks)
        change run services update sms-webhooks "$P" "$R" --update-env-vars="PUBLIC_URL=$webhooks_url"
    fi
else
    note "--notify-log off: no sms-webhooks service, so no delivery receipts or inbound STOP/START" \
        "(both are kept in the shared notification log); opt-outs go through labrelay suppressions"
fi

step "sms-service: private, reached by Pub/Sub push only"
sms_settings=("TWILIO_ACCOUNT_SID=$TWILIO_ACCOUNT_SID" "${TEMPLATE_SETTINGS[@]}")
[[ -z $webhooks_url ]] || sms_settings+=("PUBLIC_URL=$webhooks_url")
[[ -z $NOTIFY_LOG ]] || sms_settings+=("NOTIFY_LOG=$NOTIFY_LOG")
[[ -z $TWILIO_FROM ]] || sms_settings+=("TWILIO_FROM=$TWILIO_FROM")
[[ -z $TWILIO_MESSAGING_SERVICE_SID ]] || sms_settings+=("TWILIO_MESSAGING_SERVICE_SID=$TWILIO_MESSAGING_SERVICE_SID")
[[ -z $SMS_ALLOWED_COUNTRIES ]] || sms_settings+=("SMS_ALLOWED_COUNTRIES=$SMS_ALLOWED_COUNTRIES")
push_service sms-service "$SMS_SA" "TWILIO_AUTH_TOKEN=$TWILIO_SECRET:latest,$suppression_secret" \
    "$SMS_PUSH_URL" "${sms_settings[@]}"
sms_url=$PUSH_URL

# --- 7. Push subscriptions ------------------------------------------------------

step "Who may push: the invoker account, with tokens minted by the Pub/Sub service agent"
for name in email-service sms-service; do
    grant run services add-iam-policy-binding "$name" "$P" "$R" \
        --member="serviceAccount:$INVOKER_SA" --role=roles/run.invoker
done
# On the invoker account only, not the whole project as in the lab.
grant iam service-accounts add-iam-policy-binding "$INVOKER_SA" "$P" \
    --member="serviceAccount:$PUBSUB_AGENT" --role=roles/iam.serviceAccountTokenCreator
# Dead-lettering: the agent republishes to the dead-letter topic and acks the
# original once the attempts run out; the push services park what they can
# never send there themselves, at once.
for member in "$PUBSUB_AGENT" "$EMAIL_SA" "$SMS_SA"; do
    grant pubsub topics add-iam-policy-binding "$DEAD_LETTER_TOPIC" "$P" \
        --member="serviceAccount:$member" --role=roles/pubsub.publisher
done

step "Push subscriptions: ${PUSH_TIMEOUT} s per push, retried with backoff, dead-lettered after $MAX_DELIVERY_ATTEMPTS attempts"
for pair in "email-service|$email_url" "sms-service|$sms_url"; do
    name=${pair%%|*}
    url=${pair#*|}
    subscription=$name-sub
    if ! exists pubsub subscriptions describe "$subscription" "$P"; then
        change pubsub subscriptions create "$subscription" "$P" --topic="$TOPIC" \
            --push-endpoint="$url" --push-auth-service-account="$INVOKER_SA" \
            --push-auth-token-audience="$url" --ack-deadline="$PUSH_TIMEOUT" \
            --min-retry-delay=10s --max-retry-delay=600s \
            --dead-letter-topic="$DEAD_LETTER_TOPIC" --max-delivery-attempts="$MAX_DELIVERY_ATTEMPTS" \
            --message-retention-duration=7d --expiration-period=never --labels=app=labrelay
    else
        converge subscription "$subscription" \
            "topic|projects/$PROJECT/topics/$TOPIC|" \
            "pushConfig.pushEndpoint|$url|--push-endpoint=$url" \
            "pushConfig.oidcToken.serviceAccountEmail|$INVOKER_SA|--push-auth-service-account=$INVOKER_SA" \
            "pushConfig.oidcToken.audience|$url|--push-auth-token-audience=$url" \
            "ackDeadlineSeconds|$PUSH_TIMEOUT|--ack-deadline=$PUSH_TIMEOUT" \
            "retryPolicy.minimumBackoff|10s|--min-retry-delay=10s" \
            "retryPolicy.maximumBackoff|600s|--max-retry-delay=600s" \
            "deadLetterPolicy.deadLetterTopic|projects/$PROJECT/topics/$DEAD_LETTER_TOPIC|--dead-letter-topic=$DEAD_LETTER_TOPIC" \
            "deadLetterPolicy.maxDeliveryAttempts|$MAX_DELIVERY_ATTEMPTS|--max-delivery-attempts=$MAX_DELIVERY_ATTEMPTS" \
            "messageRetentionDuration|604800s|--message-retention-duration=7d" \
            "expirationPolicy.ttl||--expiration-period=never" \
            "labels.app|labrelay|--update-labels=app=labrelay"
    fi
    grant pubsub subscriptions add-iam-policy-binding "$subscription" "$P" \
        --member="serviceAccount:$PUBSUB_AGENT" --role=roles/pubsub.subscriber
done

# --- Done -----------------------------------------------------------------------

ingest_url=$(service_url lab-report-service)
step "Done. Labs POST reports to $ingest_url/ with 'Authorization: Bearer <key>'."
if [[ -n $webhooks_url ]]; then
    printf '# In Twilio, set the number'"'"'s messaging webhook ("A message comes in", HTTP POST) to %s/twilio/inbound\n' \
        "$webhooks_url" >&3
fi
if ((DRY_RUN)); then
    printf '# Dry run: nothing was changed.\n' >&3
fi
