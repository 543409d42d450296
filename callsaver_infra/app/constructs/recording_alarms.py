"""RecordingAlarms: uploads of call recordings to the session bucket fail, or none arrive for too long."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct


def request_metric(bucket_name: str, filter_id: str, metric_name: str, period: Duration) -> cloudwatch.Metric:
    """An S3 request metric (PutRequests, 4xxErrors) of the bucket's metrics configuration `filter_id`, summed."""
    return cloudwatch.Metric(
        namespace="AWS/S3",
        metric_name=metric_name,
        dimensions_map={"BucketName": bucket_name, "FilterId": filter_id},
        statistic="Sum",
        period=period,
    )


class RecordingAlarms(Construct):
    """The uploads-failing alarm, and the no-recording alarm when `max_hours_without_recording` is given."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        env_name: str,
        bucket_name: str,
        filter_id: str,
        recording_prefix: str,
        errors_threshold: int,
        errors_period_minutes: int,
        max_hours_without_recording: int | None,
        failing_alarm_name: str,
        no_recording_alarm_name: str,
        action: cloudwatch.IAlarmAction,
    ) -> None:
        super().__init__(scope, construct_id)
        where = f"s3://{bucket_name}/{recording_prefix}" if recording_prefix else f"s3://{bucket_name}"
        # S3 request metrics have no per-operation error count: 4xxErrors counts every request on the filtered
        # objects. Only LiveKit egress writes there and reads are rare, so a 4xx there is almost always a failed
        # upload (a deleted or rotated key, a changed bucket policy). Missing data is not breaching: S3 sends
        # request metrics only for minutes with requests, so no data means no failed request.
        self.failing = cloudwatch.Alarm(
            self,
            "UploadsFailing",
            alarm_name=failing_alarm_name,
            alarm_description=(
                f"CallSaver {env_name}: {errors_threshold}+ requests to {where} answered 4xx within "
                f"{errors_period_minutes} minute(s); calls are likely going unrecorded. Check first: "
                f"`callsaver-infra push-egress --env {env_name} --verify` (the key LiveKit holds vs the current "
                f"one; after a key rotation push it again), then `aws s3api get-bucket-policy --bucket "
                f"{bucket_name}`, and the LiveKit Cloud dashboard's egress errors."
            ),
            metric=request_metric(bucket_name, filter_id, "4xxErrors", Duration.minutes(errors_period_minutes)),
            threshold=errors_threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.alarms = [self.failing]
        self.no_recording: cloudwatch.Alarm | None = None
        if max_hours_without_recording is not None:
            # Missing data is breaching: S3 reports PutRequests only for hours with uploads, so an hour without
            # data is an hour without a recording, which is what this alarm is about.
            self.no_recording = cloudwatch.Alarm(
                self,
                "NoRecording",
                alarm_name=no_recording_alarm_name,
                alarm_description=(
                    f"CallSaver {env_name}: no upload to {where} for {max_hours_without_recording} hour(s) "
                    "(monitoring.max_hours_without_recording). Either no calls came in, or calls are not recorded. "
                    f"Check first: `callsaver-infra status --env {env_name}` (is the agent up?), then "
                    f"`callsaver-infra push-egress --env {env_name} --verify` (does LiveKit record to this bucket?), "
                    "and the LiveKit Cloud dashboard's recent egress sessions."
                ),
                metric=request_metric(bucket_name, filter_id, "PutRequests", Duration.hours(1)),
                threshold=1,
                comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                evaluation_periods=max_hours_without_recording,
                datapoints_to_alarm=max_hours_without_recording,
                treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            )
            self.alarms.append(self.no_recording)
        for alarm in self.alarms:
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
